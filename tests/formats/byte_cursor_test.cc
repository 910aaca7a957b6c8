// ByteCursor, the bounds-checked reader under the GGUF, zip and pickle
// parsers: values decode little-endian, and every read, skip or seek that
// would pass the end (including sizes near UINT64_MAX that would wrap an
// unchecked `pos + n`) throws FormatError saying what, where and how much.
#include "formats/byte_cursor.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace diablo::model {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// The message of the FormatError `f` throws, or "" when it throws none.
template <typename F>
std::string ErrorOf(F&& f) {
  try {
    f();
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

TEST(ByteCursor, ReadsLittleEndianIntegersAndFloats) {
  const std::vector<uint8_t> bytes = {
      0x01, 0x02,                                      // u16 0x0201
      0x04, 0x03, 0x02, 0x01,                          // u32 0x01020304
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // u64
      0xFE, 0xFF, 0xFF, 0xFF,                          // i32 -2
      0x00, 0x00, 0xC0, 0x3F,                          // f32 1.5
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0xC0,  // f64 -2.5
      0x80,                                            // i8 -128
  };
  ByteCursor c(bytes, "t");
  EXPECT_EQ(c.Read<uint16_t>("u16"), 0x0201u);
  EXPECT_EQ(c.Read<uint32_t>("u32"), 0x01020304u);
  EXPECT_EQ(c.Read<uint64_t>("u64"), 0x0102030405060708u);
  EXPECT_EQ(c.Read<int32_t>("i32"), -2);
  EXPECT_EQ(c.Read<float>("f32"), 1.5f);
  EXPECT_EQ(c.Read<double>("f64"), -2.5);
  EXPECT_EQ(c.Read<int8_t>("i8"), -128);
  EXPECT_EQ(c.pos(), bytes.size());
  EXPECT_EQ(c.remaining(), 0u);
}

TEST(ByteCursor, TruncatedReadSaysWhatWhereAndHowMuch) {
  const std::vector<uint8_t> bytes = {1, 2, 3, 4, 5};
  ByteCursor c(bytes, "x.bin: not valid");
  c.Skip(2, "prefix");
  std::string error = ErrorOf([&] { c.Read<uint64_t>("tensor count"); });
  EXPECT_THAT(error, HasSubstr("x.bin: not valid: "));
  EXPECT_THAT(error, HasSubstr("truncated while reading tensor count"));
  EXPECT_THAT(error, HasSubstr("needs 8 bytes, 3 left"));
  EXPECT_THAT(error, HasSubstr("(at byte 2 of 5)"));
  EXPECT_EQ(c.pos(), 2u) << "a failed read must not move the cursor";
}

TEST(ByteCursor, ReadsExactlyToTheEndButNotOneByteMore) {
  const std::vector<uint8_t> bytes = {'a', 'b', 'c'};
  ByteCursor c(bytes, "t");
  EXPECT_EQ(c.ReadString(3, "name"), "abc");
  EXPECT_EQ(c.ReadString(0, "empty name"), "");
  EXPECT_THAT(ErrorOf([&] { c.Read<uint8_t>("flag"); }), HasSubstr("needs 1 bytes, 0 left"));
}

TEST(ByteCursor, EmptyInputRefusesEveryNonEmptyRead) {
  ByteCursor c(std::span<const uint8_t>(), "t");
  EXPECT_THAT(ErrorOf([&] { c.Read<uint8_t>("opcode"); }), HasSubstr("truncated"));
  EXPECT_THAT(ErrorOf([&] { c.ReadUntil('\n', "line"); }), HasSubstr("truncated"));
  EXPECT_EQ(c.ReadBytes(0, "nothing").size(), 0u);
}

TEST(ByteCursor, SizesNearUint64MaxDoNotWrapAroundTheEnd) {
  const std::vector<uint8_t> bytes(16, 0);
  ByteCursor c(bytes, "t");
  c.Skip(8, "header");
  // Unchecked, pos + n would wrap to a small number and pass `pos + n <= size`.
  for (uint64_t n : {kMax, kMax - 7, kMax - 8, uint64_t{1} << 63}) {
    EXPECT_THAT(ErrorOf([&] { c.Skip(n, "run"); }), HasSubstr("truncated while reading run")) << n;
    EXPECT_THAT(ErrorOf([&] { c.ReadBytes(n, "run"); }), HasSubstr("truncated")) << n;
    EXPECT_THAT(ErrorOf([&] { c.ReadString(n, "run"); }), HasSubstr("truncated")) << n;
    EXPECT_THAT(ErrorOf([&] { c.Need(n, "run"); }), HasSubstr("truncated")) << n;
  }
  EXPECT_EQ(c.pos(), 8u);
  c.Skip(8, "the rest");
  EXPECT_EQ(c.remaining(), 0u);
}

TEST(ByteCursor, ElementCountTimesSizeIsCheckedWithoutOverflow) {
  const std::vector<uint8_t> bytes(100, 0);
  ByteCursor c(bytes, "t");
  EXPECT_TRUE(c.Holds(25, 4));
  EXPECT_FALSE(c.Holds(26, 4));
  EXPECT_TRUE(c.Holds(0, 8));
  // 2^62 * 4 and 2^61 * 8 wrap to 0 in 64 bits; (2^64-1) * 2 wraps to 2^64-2.
  EXPECT_FALSE(c.Holds(uint64_t{1} << 62, 4));
  EXPECT_FALSE(c.Holds(uint64_t{1} << 61, 8));
  EXPECT_FALSE(c.Holds(kMax, 2));
  EXPECT_FALSE(c.Holds(kMax, kMax));
  // Zero-byte elements cannot bound a count.
  EXPECT_FALSE(c.Holds(1, 0));
  c.Skip(96, "most");
  EXPECT_TRUE(c.Holds(1, 4));
  EXPECT_FALSE(c.Holds(2, 4)) << "Holds must measure from the current position";
}

TEST(ByteCursor, ReadsLengthPrefixedStrings) {
  const std::vector<uint8_t> bytes = {3, 0, 0, 0, 'a', 'b', 'c', 0, 'z'};
  ByteCursor c(bytes, "t");
  EXPECT_EQ(c.ReadPrefixedString<uint32_t>("key"), "abc");
  EXPECT_EQ(c.ReadPrefixedString<uint8_t>("empty"), "");
  EXPECT_EQ(c.Read<uint8_t>("tail"), 'z');
}

TEST(ByteCursor, LengthPrefixLargerThanTheRemainderIsRefusedAtThePrefix) {
  // u64 length 6 with 5 bytes after it.
  const std::vector<uint8_t> bytes = {0xAA, 6, 0, 0, 0, 0, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'};
  ByteCursor c(bytes, "f.gguf: not a valid GGUF file");
  c.Skip(1, "padding");
  std::string error = ErrorOf([&] { c.ReadPrefixedString<uint64_t>("metadata key"); });
  EXPECT_THAT(error, HasSubstr("truncated while reading metadata key"));
  EXPECT_THAT(error, HasSubstr("length prefix says 6 bytes, 5 left"));
  EXPECT_THAT(error, HasSubstr("(at byte 1 of 14)"));
  EXPECT_EQ(c.pos(), 1u) << "a refused string must not move the cursor";
}

TEST(ByteCursor, HugeLengthPrefixIsRefusedBeforeAnyAllocation) {
  // A u64 prefix of 2^64-1 and a u32 prefix of 2^32-1: an unchecked reader
  // would try to allocate them (or wrap pos + length).
  std::vector<uint8_t> bytes(8, 0xFF);
  bytes.push_back('x');
  ByteCursor wide(bytes, "t");
  EXPECT_THAT(ErrorOf([&] { wide.ReadPrefixedString<uint64_t>("name"); }),
              HasSubstr("length prefix says 18446744073709551615 bytes, 1 left"));
  ByteCursor narrow{std::span<const uint8_t>(bytes).subspan(4), "t"};
  EXPECT_THAT(ErrorOf([&] { narrow.ReadPrefixedString<uint32_t>("name"); }),
              HasSubstr("length prefix says 4294967295 bytes, 1 left"));
}

TEST(ByteCursor, TruncatedLengthPrefixIsRefused) {
  const std::vector<uint8_t> bytes = {5, 0, 0};
  ByteCursor c(bytes, "t");
  EXPECT_THAT(ErrorOf([&] { c.ReadPrefixedString<uint32_t>("string"); }),
              HasSubstr("needs 4 bytes, 3 left"));
}

TEST(ByteCursor, SeekMovesAnywhereUpToTheEndAndNoFurther) {
  const std::vector<uint8_t> bytes = {10, 11, 12, 13};
  ByteCursor c(bytes, "a.zip: not a valid zip archive");
  c.Seek(2, "entry");
  EXPECT_EQ(c.Read<uint8_t>("byte"), 12);
  c.Seek(0, "start");
  EXPECT_EQ(c.Read<uint8_t>("byte"), 10);
  c.Seek(4, "end");  // the end itself is a valid position
  EXPECT_EQ(c.remaining(), 0u);
  EXPECT_THAT(ErrorOf([&] { c.Read<uint8_t>("byte"); }), HasSubstr("truncated"));
  for (uint64_t offset : {uint64_t{5}, uint64_t{1} << 32, kMax}) {
    std::string error = ErrorOf([&] { c.Seek(offset, "local header"); });
    EXPECT_THAT(error, HasSubstr("cannot seek to byte " + std::to_string(offset) +
                                 " for local header: only 4 bytes"));
    EXPECT_THAT(error, HasSubstr("a.zip: not a valid zip archive"));
  }
  EXPECT_EQ(c.pos(), 4u) << "a failed seek must not move the cursor";
}

TEST(ByteCursor, ReadUntilConsumesTheDelimiterAndRefusesAMissingOne) {
  const std::string text = "torch\nFloatStorage\nrest";
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  ByteCursor c(bytes, "t");
  EXPECT_EQ(c.ReadUntil('\n', "module"), "torch");
  EXPECT_EQ(c.ReadUntil('\n', "name"), "FloatStorage");
  std::string error = ErrorOf([&] { c.ReadUntil('\n', "module"); });
  EXPECT_THAT(error, HasSubstr("truncated while reading module"));
  EXPECT_THAT(error, HasSubstr("no terminating byte 0x0a in the 4 bytes left"));
}

TEST(ByteCursor, ReadBytesReturnsAViewIntoTheInput) {
  const std::vector<uint8_t> bytes = {1, 2, 3, 4, 5};
  ByteCursor c(bytes, "t");
  c.Skip(1, "head");
  std::span<const uint8_t> run = c.ReadBytes(3, "body");
  EXPECT_EQ(run.data(), bytes.data() + 1);
  EXPECT_EQ(run.size(), 3u);
  EXPECT_EQ(c.pos(), 4u);
}

TEST(ByteCursor, FailNamesTheContextAndTheOffset) {
  const std::vector<uint8_t> bytes(10, 0);
  ByteCursor c(bytes, "m.pkl: refusing to unpickle");
  c.Skip(3, "head");
  EXPECT_EQ(ErrorOf([&] { c.Fail("stack underflow"); }),
            "m.pkl: refusing to unpickle: stack underflow (at byte 3 of 10)");
  EXPECT_EQ(ErrorOf([&] { c.FailAt(1, "bad opcode"); }),
            "m.pkl: refusing to unpickle: bad opcode (at byte 1 of 10)");
}

}  // namespace
}  // namespace diablo::model
