// Test helpers: run tests/worker/model/hf_reference.py in the test venv and read the
// arrays it writes (raw little-endian data + index.json).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace diablo::testing {

// A fresh directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "diablo-test-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline bool HaveVenv() { return std::filesystem::exists(DIABLO_VENV_PYTHON); }
inline bool HaveModel() { return std::filesystem::exists(DIABLO_MODEL_GGUF); }

// Runs hf_reference.py with `args`; returns the parsed index.json of `out`.
inline nlohmann::json RunReference(const std::string& args, const std::string& out) {
  const std::string command = std::string(DIABLO_VENV_PYTHON) + " " + DIABLO_SOURCE_DIR +
                              "/tests/worker/model/hf_reference.py " + args + " --out " + out +
                              " > " + out + "/reference.log 2>&1";
  if (std::system(command.c_str()) != 0) {
    std::ifstream log(out + "/reference.log");
    ADD_FAILURE() << "reference script failed: " << command << "\n"
                  << std::string(std::istreambuf_iterator<char>(log), {});
    return {};
  }
  std::ifstream index(out + "/index.json");
  return nlohmann::json::parse(index);
}

template <typename T>
std::vector<T> ReadArray(const std::string& dir, const std::string& name) {
  std::ifstream in(dir + "/" + name + ".bin", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
  std::vector<T> values(bytes.size() / sizeof(T));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(T));
  return values;
}

inline std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), {});
}

}  // namespace diablo::testing
