// Helpers shared by the tokenizer tests: a scratch directory per test, file
// writing, and running the Python reference (hf_reference.py) in the test venv.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace diablo::model::testing {

// A fresh directory removed at the end of the test.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("diablo-tok-" + std::string(info->test_suite_name()) + "-" + info->name() + "-" +
             std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

inline void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

inline nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return nlohmann::json::parse(buffer.str());
}

// The venv's Python, or "" when the build was configured without one.
inline std::string VenvPython() {
  const std::string python = DIABLO_VENV_PYTHON;
  return !python.empty() && std::filesystem::exists(python) ? python : "";
}

// Runs hf_reference.py with `args` (already shell-quoted); returns its exit
// status and leaves its stderr in `log`.
inline int RunReference(const std::string& args, const std::string& log) {
  const std::string script = std::string(DIABLO_SOURCE_DIR) + "/tests/text/hf_reference.py";
  const std::string command =
      "'" + VenvPython() + "' '" + script + "' " + args + " >'" + log + "' 2>&1";
  return std::system(command.c_str());
}

inline std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The reference output for `request` (a JSON text) from `hf_reference.py
// <verb> [<args>...] REQUEST OUT`, kept in the build directory under a key of
// the request, the script and `extra_key` so that ctest's one process per
// test runs the slow Python side once.  Fails the test when Python fails.
inline nlohmann::json CachedReference(const std::string& verb_and_args, const std::string& request,
                                      const std::string& extra_key, const ScratchDir& dir) {
  const std::string script = std::string(DIABLO_SOURCE_DIR) + "/tests/text/hf_reference.py";
  const size_t key = std::hash<std::string>{}(request + ReadText(script) + extra_key +
                                              verb_and_args + VenvPython());
  const std::filesystem::path cache_dir =
      std::filesystem::path(DIABLO_BINARY_DIR) / "tests" / "tokenizer-reference";
  const std::filesystem::path cached = cache_dir / (std::to_string(key) + ".json");
  if (std::filesystem::exists(cached)) return ReadJson(cached.string());
  WriteFile(dir / "request.json", request);
  const std::string out = dir / "out.json";
  const int status = RunReference(verb_and_args + " '" + (dir / "request.json") + "' '" + out + "'",
                                  dir / "log.txt");
  if (status != 0) {
    ADD_FAILURE() << "hf_reference.py " << verb_and_args << " failed:\n"
                  << ReadText(dir / "log.txt");
    return nullptr;
  }
  // Written under a temporary name and renamed, so parallel tests never read half a file.
  std::filesystem::create_directories(cache_dir);
  const std::filesystem::path partial = cached.string() + "." + std::to_string(::getpid());
  std::filesystem::copy_file(out, partial, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::rename(partial, cached);
  return ReadJson(out);
}

// Texts on which our ids must equal Hugging Face's: several scripts, combining
// marks, emoji with modifiers and ZWJ sequences, code, whitespace runs,
// numbers, contractions, and special tokens written in the text.
inline std::vector<std::string> ReferenceTexts() {
  return {
      "Hello world",
      "The café's naïve résumé — déjà vu! Straße, smörgåsbord.",
      "東京は日本の首都です。你好，世界！今日はいい天気ですね。",
      "مرحبا بالعالم، كيف حالك اليوم؟",
      "Привет, мир! Γειά σου Κόσμε! नमस्ते दुनिया สวัสดีครับ 안녕하세요",
      "Decomposed: e\u0301 a\u0308 n\u0303; Zalgo: Z\u0351\u0360a\u0352l\u0353g\u0354o",
      "NFC cases: \u212b \u1100\u1161\u11a8 \u0915\u093c a\u0301\u0328 \u00c5",
      // clang-format 14 splits this line differently on every run.
      // clang-format off
      "Emoji: 👍 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🧑🏿‍💻 🎉🎉🎉 ©®™ → ⇒ ∀∃∈",
      // clang-format on
      "def f(x):\n\treturn x**2  # square\n\n\nif __name__ == '__main__':\n    print(f(3))\n",
      "a  b   c\t\td \n\n  e\r\nf   \n   ",
      "   leading spaces",
      "trailing spaces   ",
      " ",
      "\n\n\n",
      "1 12 123 1234 12345 123456789 3.14159 2024-01-02 1e-5 0x1F",
      "Other numbers: ٣٤٥ ²³ ① Ⅻ ½ and 1st 2nd x2y",
      "a\n\n 12 x \t 7",
      "I'm you're we've they'll he'd it's can't won't",
      "I'M YOU'RE WE'VE THEY'LL HE'D IT'S 'S 'start 'sss ''s",
      "Long ſ: 'ſ and ligatures ﬁ ﬂ; NBSP:\u00a0x em\u2003space ideo\u3000space",
      "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
      "<|endoftext|>text<|endoftext|><|endoftext|> <|im_start|>",
      "Almost special: <|im_start| <|im_end|x <|endoftext|>> <repo_name>",
      "<p class=\"x\">Hello &amp; welcome</p>\r\n{\"key\": [1, 2, 3]}",
      "supercalifragilisticexpialidocious antidisestablishmentarianism",
      "MixedCASE camelCase snake_case kebab-case SCREAMING_CASE",
      "Tabs\tand\vvertical\ftabs\u0085nel\u2028line\u2029para\u001csep",
      "",
  };
}

}  // namespace diablo::model::testing
