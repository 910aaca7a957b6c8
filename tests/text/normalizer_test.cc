// Unit tests of NFC on cases whose answer the Unicode standard spells out;
// hf_reference_test.cc compares every affected code point with Python.
#include "text/normalizer.h"

#include <gtest/gtest.h>

namespace diablo::model {
namespace {

std::string Nfc(const std::string& s) { return NormalizeNfc(s).text; }

TEST(Nfc, ComposesBaseAndMark) {
  EXPECT_EQ(Nfc("e\u0301"), "\u00e9");
  EXPECT_EQ(Nfc("A\u030a"), "\u00c5");
  EXPECT_EQ(Nfc("plain ascii"), "plain ascii");
}

TEST(Nfc, ReordersMarksByCombiningClassThenComposes) {
  // a + acute (230) + ogonek (202): ogonek sorts first and composes (ą),
  // then acute is not blocked and composes with nothing further.
  EXPECT_EQ(Nfc("a\u0301\u0328"), "\u0105\u0301");
}

TEST(Nfc, SingletonsAndExclusionsStayDecomposed) {
  EXPECT_EQ(Nfc("\u212b"), "\u00c5");        // ANGSTROM SIGN -> Å
  EXPECT_EQ(Nfc("\u0958"), "\u0915\u093c");  // excluded from composition
}

TEST(Nfc, HangulJamoCompose) {
  EXPECT_EQ(Nfc("\u1100\u1161\u11a8"), "\uac01");
  EXPECT_EQ(Nfc("\uac00\u11a8"), "\uac01");
}

TEST(Nfc, InvalidBytesPassThroughAndBlockComposition) {
  EXPECT_EQ(Nfc("e\xff\u0301"), "e\xff\u0301");
}

TEST(Nfc, SourceMapCoversTheInput) {
  const NormalizedText n = NormalizeNfc("xe\u0301y");
  ASSERT_EQ(n.text, "x\u00e9y");
  EXPECT_EQ(n.source_begin, (std::vector<uint32_t>{0, 1, 1, 4}));
  EXPECT_EQ(n.source_end, (std::vector<uint32_t>{1, 4, 4, 5}));
}

TEST(Nfc, CombiningClasses) {
  EXPECT_EQ(CombiningClass('a'), 0);
  EXPECT_EQ(CombiningClass(0x301), 230);
  EXPECT_EQ(CombiningClass(0x328), 202);
  EXPECT_EQ(CombiningClass(0x3099), 8);
}

}  // namespace
}  // namespace diablo::model
