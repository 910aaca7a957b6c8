// GGUF parsing: a small well-formed file parses to the right metadata and
// tensor directory, and each kind of corrupt or hostile header is refused with
// a FormatError that says what is wrong (never a crash or a huge allocation).
#include "formats/gguf.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace diablo::model {
namespace {

using ::testing::HasSubstr;

// Writes GGUF bytes field by field, so tests can build any (broken) header.
class GgufBuilder {
 public:
  template <typename T>
  GgufBuilder& Put(T value) {
    const auto* p = reinterpret_cast<const uint8_t*>(&value);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
    return *this;
  }
  GgufBuilder& Str(const std::string& s) {
    Put<uint64_t>(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  GgufBuilder& PadTo(size_t alignment) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(0);
    return *this;
  }
  GgufBuilder& Zeros(size_t n) {
    bytes_.insert(bytes_.end(), n, 0);
    return *this;
  }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

constexpr uint32_t kMagic = 0x46554747;
constexpr uint32_t kTypeU32 = 4, kTypeString = 8, kTypeArray = 9;

// A valid file: 2 metadata entries, two F32 tensors of 4 and 8 elements.
// Overrides let a test corrupt one field.
struct Fields {
  uint32_t magic = kMagic;
  uint32_t version = 3;
  uint64_t tensor_count = 2;
  uint64_t second_offset = 32;  // first tensor takes 16 bytes, aligned to 32
  uint32_t second_type = 0;     // F32
  uint64_t second_dim = 8;
  size_t data_bytes = 64;
};

std::vector<uint8_t> MakeFile(const Fields& f = {}) {
  GgufBuilder b;
  b.Put(f.magic).Put(f.version).Put(f.tensor_count).Put<uint64_t>(2);
  b.Str("general.architecture").Put(kTypeString).Str("llama");
  b.Str("llama.block_count").Put(kTypeU32).Put<uint32_t>(2);
  b.Str("a.weight").Put<uint32_t>(1).Put<uint64_t>(4).Put<uint32_t>(0).Put<uint64_t>(0);
  b.Str("b.weight").Put<uint32_t>(1).Put(f.second_dim).Put(f.second_type).Put(f.second_offset);
  b.PadTo(32).Zeros(f.data_bytes);
  return b.bytes();
}

std::string ParseError(const std::vector<uint8_t>& bytes) {
  try {
    GgufFile::Parse(bytes, "test.gguf");
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

TEST(Gguf, ParsesMetadataAndTensorDirectory) {
  auto bytes = MakeFile();
  GgufFile file = GgufFile::Parse(bytes, "test.gguf");
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.GetString("general.architecture"), "llama");
  EXPECT_EQ(file.GetUint("llama.block_count"), 2u);
  ASSERT_EQ(file.tensors().size(), 2u);
  const GgufTensorInfo* b = file.FindTensor("b.weight");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->byte_size, 32u);
  EXPECT_EQ(file.tensor_data(*b).size(), 32u);
  EXPECT_THAT(ParseError(bytes), ::testing::IsEmpty());
}

TEST(Gguf, WrongMagicOrVersionIsRefused) {
  EXPECT_THAT(ParseError(MakeFile({.magic = 0x12345678})), HasSubstr("wrong magic"));
  EXPECT_THAT(ParseError(MakeFile({.version = 1})), HasSubstr("version 1 is not supported"));
}

TEST(Gguf, EveryTruncationIsRefused) {
  auto bytes = MakeFile();
  for (size_t size = 0; size + 1 < bytes.size(); ++size) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + size);
    EXPECT_THAT(ParseError(cut), HasSubstr("test.gguf: not a valid GGUF file")) << size;
  }
}

TEST(Gguf, HugeCountsAreRefusedBeforeAllocating) {
  EXPECT_THAT(ParseError(MakeFile({.tensor_count = uint64_t{1} << 40})),
              HasSubstr("tensor count 1099511627776 exceeds the file"));
  GgufBuilder b;
  b.Put(kMagic).Put<uint32_t>(3).Put<uint64_t>(0).Put<uint64_t>(1);
  b.Str("tokens").Put(kTypeArray).Put(kTypeString).Put<uint64_t>(uint64_t{1} << 50);
  EXPECT_THAT(ParseError(b.bytes()), HasSubstr("more than the file holds"));
}

TEST(Gguf, DataOutOfRangeOrOverlappingIsRefused) {
  EXPECT_THAT(ParseError(MakeFile({.second_offset = 1 << 20})),
              HasSubstr("beyond the end of the file"));
  EXPECT_THAT(ParseError(MakeFile({.second_offset = 0})), HasSubstr("overlap"));
  EXPECT_THAT(ParseError(MakeFile({.second_offset = 33})), HasSubstr("not aligned"));
  EXPECT_THAT(ParseError(MakeFile({.data_bytes = 40})), HasSubstr("beyond the end of the file"));
}

TEST(Gguf, UnknownTypesAndImpossibleShapesAreRefused) {
  EXPECT_THAT(ParseError(MakeFile({.second_type = 99})), HasSubstr("unknown ggml type 99"));
  EXPECT_THAT(ParseError(MakeFile({.second_type = 2})), HasSubstr("whole number of Q4_0 blocks"));
  EXPECT_THAT(ParseError(MakeFile({.second_dim = 0})), HasSubstr("impossible shape"));
  EXPECT_THAT(ParseError(MakeFile({.second_dim = uint64_t{1} << 62})),
              HasSubstr("impossible shape"));
  GgufBuilder b;
  b.Put(kMagic).Put<uint32_t>(3).Put<uint64_t>(0).Put<uint64_t>(1);
  b.Str("x").Put<uint32_t>(77).Zeros(8);
  EXPECT_THAT(ParseError(b.bytes()), HasSubstr("unknown value type 77"));
}

TEST(Gguf, MetadataLookupsNameTheKey) {
  auto bytes = MakeFile();
  GgufFile file = GgufFile::Parse(bytes, "test.gguf");
  try {
    file.GetUint("general.architecture");
    FAIL() << "a string read as an integer";
  } catch (const FormatError& e) {
    EXPECT_THAT(e.what(), HasSubstr("'general.architecture' is not a non-negative integer"));
  }
  EXPECT_THROW(file.GetString("missing.key"), FormatError);
  EXPECT_EQ(file.GetUintOr("missing.key", 7), 7u);
}

}  // namespace
}  // namespace diablo::model
