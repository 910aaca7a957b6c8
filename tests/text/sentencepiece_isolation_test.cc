// SentencePiece inside a LibTorch process, linked as `diablo` is (diablo_text
// and LibTorch, never libsentencepiece itself).  libsentencepiece defines a
// gflags-style FLAGS_minloglevel (a 32-byte object); in the global symbol
// scope it binds to libc10's 4-byte int of that name, and its constructor
// overwrites the flags beside it, caffe2_use_fatal_for_enforce among them:
// from then on a failed allocation aborts the process instead of throwing
// c10::Error.  The plugin loaded with RTLD_DEEPBIND keeps the library's
// symbols to itself; these tests load a tokenizer.model and check LibTorch.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <dlfcn.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tests/text/test_util.h"
#include "text/tokenizer.h"

namespace diablo::model {
namespace {

using ::testing::HasSubstr;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
constexpr bool kSanitizer = true;
#else
constexpr bool kSanitizer = false;
#endif
#else
constexpr bool kSanitizer = false;
#endif

// Protocol-buffer wire format, enough for a sentencepiece ModelProto: this
// binary must not link libsentencepiece (its trainer) to make one, or the
// library would be in the global scope from the start.
std::string Varint(uint64_t value) {
  std::string out;
  do {
    const uint8_t low = value & 0x7f;
    value >>= 7;
    out += static_cast<char>(value != 0 ? (low | 0x80) : low);
  } while (value != 0);
  return out;
}
std::string BytesField(int number, const std::string& bytes) {
  return Varint(static_cast<uint64_t>(number) << 3 | 2) + Varint(bytes.size()) + bytes;
}
std::string VarintField(int number, uint64_t value) {
  return Varint(static_cast<uint64_t>(number) << 3) + Varint(value);
}
std::string FloatField(int number, float value) {
  char bytes[4];
  std::memcpy(bytes, &value, 4);  // little-endian, as the wire format
  return Varint(static_cast<uint64_t>(number) << 3 | 5) + std::string(bytes, 4);
}

// A character model: <unk>, <s>, </s>, "▁" and a-z (ids 4..29).
std::string WriteCharModel(const testing::ScratchDir& dir) {
  enum { kNormal = 1, kUnknown = 2, kControl = 3 };
  std::vector<std::pair<std::string, int>> pieces = {
      {"<unk>", kUnknown}, {"<s>", kControl}, {"</s>", kControl}, {"\xe2\x96\x81", kNormal}};
  for (char c = 'a'; c <= 'z'; ++c) pieces.emplace_back(std::string(1, c), kNormal);
  std::string model;
  for (size_t i = 0; i < pieces.size(); ++i) {
    model += BytesField(1, BytesField(1, pieces[i].first) + FloatField(2, -float(i)) +
                               VarintField(3, pieces[i].second));
  }
  model += BytesField(2, VarintField(3, /*CHAR*/ 4) + VarintField(4, pieces.size()));
  model += BytesField(3, "");  // default normalizer: dummy prefix, "▁" for spaces
  testing::WriteFile(dir / "tokenizer.model", model);
  return dir / "tokenizer.model";
}

// Read through the dynamic linker, never declared with C10_DECLARE_bool: a
// direct reference would copy the flag into this executable (a copy
// relocation), where the overwrite of libc10's memory could not reach it.
// Read as a byte: an overwritten bool holds values a bool cannot.
bool UseFatalForEnforce() {
  const auto* flag =
      static_cast<const unsigned char*>(dlsym(RTLD_DEFAULT, "FLAGS_caffe2_use_fatal_for_enforce"));
  EXPECT_NE(flag, nullptr) << "libc10 exports no FLAGS_caffe2_use_fatal_for_enforce";
  return flag != nullptr && *flag != 0;
}

bool PluginLoaded() {
  void* plugin = dlopen(DIABLO_BINARY_DIR "/bin/diablo_sentencepiece.so", RTLD_LAZY | RTLD_NOLOAD);
  if (plugin != nullptr) dlclose(plugin);
  return plugin != nullptr;
}

// First in the file: the plugin is looked for once per process, so this
// runs before any other test here loads it (ctest runs each in a process).
TEST(SentencePieceIsolation, AMissingPluginIsAClearErrorAndLoadingIsRetried) {
  if (PluginLoaded()) GTEST_SKIP() << "the plugin is already loaded in this process";
  testing::ScratchDir dir;
  const std::string model = WriteCharModel(dir);
  ASSERT_EQ(setenv("DIABLO_SENTENCEPIECE_PLUGIN", (dir / "nowhere.so").c_str(), 1), 0);
  try {
    LoadTokenizer(model);
    ADD_FAILURE() << "a tokenizer.model loaded without its plugin";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("DIABLO_SENTENCEPIECE_PLUGIN"));
    EXPECT_THAT(e.what(), HasSubstr("nowhere.so"));
  }
  unsetenv("DIABLO_SENTENCEPIECE_PLUGIN");
  EXPECT_EQ(LoadTokenizer(model)->vocab_size(), 30u);
}

TEST(SentencePieceIsolation, LibTorchStillThrowsOnAFailedAllocationAfterATokenizerModel) {
  if (kSanitizer) {
    GTEST_SKIP() << "sanitizer runtimes refuse RTLD_DEEPBIND; this build loads the plugin "
                    "without it";
  }
  ASSERT_FALSE(UseFatalForEnforce()) << "libc10's flags were overwritten before this test";
  testing::ScratchDir dir;
  const auto tokenizer = LoadTokenizer(WriteCharModel(dir));
  // The library really is loaded, and works.
  void* library = dlopen("libsentencepiece.so.0", RTLD_LAZY | RTLD_NOLOAD);
  ASSERT_NE(library, nullptr) << "loading a tokenizer.model did not load libsentencepiece";
  dlclose(library);
  EXPECT_EQ(tokenizer->Encode("hello world"),
            (std::vector<int32_t>{1, 3, 11, 8, 15, 15, 18, 3, 26, 18, 21, 15, 7}));
  EXPECT_EQ(tokenizer->Decode(tokenizer->Encode("hello world"), /*skip_special=*/true),
            "hello world");
  EXPECT_EQ(tokenizer->Decode(std::vector<int32_t>{1, 11, 8, 2}), "<s>he</s>");
  // Its symbols stayed out of the global scope ...
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "_ZN13sentencepiece22SentencePieceProcessorC1Ev"), nullptr);
  // ... so LibTorch's flags are intact, and a failed CAFFE_ENFORCE throws.
  EXPECT_FALSE(UseFatalForEnforce()) << "libsentencepiece overwrote libc10's flags";
  EXPECT_THROW(at::empty({int64_t{1} << 60}, at::kByte), c10::Error);
}

}  // namespace
}  // namespace diablo::model
