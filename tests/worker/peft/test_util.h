// Helpers shared by the adapter-file tests: a scratch folder removed at the
// end of the test, raw file I/O, and running the venv's Python (the
// independent reference) with a script from this folder.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace diablo::testing {

// A fresh folder under the system temp directory, deleted with its contents.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "diablo-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

inline std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs tests/<script> (a path below tests/) with the venv's Python and `args`.
inline CommandResult RunPythonScript(const std::string& script,
                                     const std::vector<std::string>& args) {
  std::string command = ShellQuote(DIABLO_VENV_PYTHON) + " " +
                        ShellQuote(std::string(DIABLO_SOURCE_DIR) + "/tests/" + script);
  for (const auto& a : args) command += " " + ShellQuote(a);
  command += " 2>&1";
  CommandResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    result.output.append(buffer.data(), n);
  int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// Skips the current test when the build has no venv Python (set by
// scripts/setup.sh); the reference checks cannot run without it.
#define DIABLO_REQUIRE_PYTHON()                                               \
  do {                                                                        \
    if (std::string(DIABLO_VENV_PYTHON).empty()) {                            \
      GTEST_SKIP() << "DIABLO_VENV_PYTHON is not set (run scripts/setup.sh)"; \
    }                                                                         \
  } while (0)

}  // namespace diablo::testing
