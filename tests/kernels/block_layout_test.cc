// BlockLayout against the reference formula of DESIGN.md, computed here
// independently in floating point, and FromAdapterShape's acceptance rules.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/block_diag.h"

namespace diablo::kernels {
namespace {

struct Reference {
  int64_t block_in, block_out, blocks;
};

Reference ReferenceLayout(int64_t in, int64_t out, int64_t n) {
  const auto bi = static_cast<int64_t>(std::ceil(static_cast<double>(in) / n));
  const auto bo = static_cast<int64_t>(std::ceil(static_cast<double>(out) / n));
  const auto blocks = std::max(static_cast<int64_t>(std::ceil(static_cast<double>(in) / bi)),
                               static_cast<int64_t>(std::ceil(static_cast<double>(out) / bo)));
  return {bi, bo, blocks};
}

const std::vector<int64_t> kSizes = {1,   2,   3,   7,    9,    63,   64,   65,
                                     100, 576, 640, 1000, 1536, 4096, 11008};
const std::vector<int64_t> kBlocks = {1, 2, 3, 5, 7, 16, 32, 63, 64, 65, 100, 128, 1000, 5000};

TEST(BlockLayout, MatchesReferenceFormulaForManySizes) {
  for (int64_t in : kSizes) {
    for (int64_t out : kSizes) {
      for (int64_t n : kBlocks) {
        const BlockLayout l = BlockLayout::For(in, out, n);
        const Reference r = ReferenceLayout(in, out, n);
        SCOPED_TRACE("in=" + std::to_string(in) + " out=" + std::to_string(out) +
                     " N=" + std::to_string(n));
        EXPECT_EQ(l.in, in);
        EXPECT_EQ(l.out, out);
        EXPECT_EQ(l.block_in, r.block_in);
        EXPECT_EQ(l.block_out, r.block_out);
        EXPECT_EQ(l.blocks, r.blocks);
        EXPECT_LE(l.blocks, n);
        EXPECT_GE(l.blocks * l.block_in, in);
        EXPECT_GE(l.blocks * l.block_out, out);
        EXPECT_EQ(l.parameters(), l.blocks * l.block_in * l.block_out);
      }
    }
  }
}

TEST(BlockLayout, ThousandWithSixtyFourBlocksHasSixtyThreeBlocksOfSixteen) {
  const BlockLayout l = BlockLayout::For(1000, 1000, 64);
  EXPECT_EQ(l.block_in, 16);
  EXPECT_EQ(l.block_out, 16);
  EXPECT_EQ(l.blocks, 63);
}

TEST(BlockLayout, EffectiveBlocksCanShrinkOnOneSideOnly) {
  // in side: ceil(1000/16) = 63 blocks; out side: 4096/64 = 64 blocks.
  const BlockLayout l = BlockLayout::For(1000, 4096, 64);
  EXPECT_EQ(l.block_in, 16);
  EXPECT_EQ(l.block_out, 64);
  EXPECT_EQ(l.blocks, 64);
}

TEST(BlockLayout, RejectsNonPositiveSizesAndBlocks) {
  EXPECT_THROW(BlockLayout::For(0, 10, 2), std::invalid_argument);
  EXPECT_THROW(BlockLayout::For(10, -1, 2), std::invalid_argument);
  EXPECT_THROW(BlockLayout::For(10, 10, 0), std::invalid_argument);
}

TEST(BlockLayout, FromAdapterShapeRoundTripsEveryReferenceLayout) {
  for (int64_t in : kSizes) {
    for (int64_t out : kSizes) {
      for (int64_t n : kBlocks) {
        const BlockLayout l = BlockLayout::For(in, out, n);
        const BlockLayout back =
            BlockLayout::FromAdapterShape(in, out, {l.blocks, l.block_in, l.block_out});
        EXPECT_EQ(back.blocks, l.blocks);
        EXPECT_EQ(back.block_in, l.block_in);
        EXPECT_EQ(back.block_out, l.block_out);
        EXPECT_EQ(back.in, in);
        EXPECT_EQ(back.out, out);
      }
    }
  }
}

TEST(BlockLayout, FromAdapterShapeRejectsShapesNoReferenceLayoutProduces) {
  using ::testing::HasSubstr;
  const std::vector<std::vector<int64_t>> bad = {
      {63, 16},                                     // not 3-D
      {63, 16, 16, 1},                              // not 3-D
      {64, 16, 16},                                 // one block too many for 1000 -> 1000
      {62, 16, 16},                                 // too few to cover the layer
      {63, 17, 16},                                 // block_in of no N
      {63, 16, 0},                                  // empty
      {0, 16, 16},     {-63, 16, 16}, {125, 8, 8},  // 1000/8 = 125 blocks is valid for N=125 ...
  };
  for (size_t i = 0; i + 1 < bad.size(); ++i) {
    SCOPED_TRACE(i);
    try {
      BlockLayout::FromAdapterShape(1000, 1000, bad[i]);
      ADD_FAILURE() << "accepted a wrong adapter shape";
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), HasSubstr("in=1000 out=1000"));
    }
  }
  // ... so the last one is accepted, showing the check is about the layout
  // rule and not a fixed N.
  EXPECT_EQ(BlockLayout::FromAdapterShape(1000, 1000, bad.back()).blocks, 125);
  // A wide layer's adapter does not fit the transposed layer.
  const BlockLayout wide = BlockLayout::For(576, 1536, 64);
  EXPECT_THROW(
      BlockLayout::FromAdapterShape(1536, 576, {wide.blocks, wide.block_in, wide.block_out}),
      std::invalid_argument);
}

TEST(BlockLayout, FromAdapterShapeMessageNamesTheAdapterShape) {
  try {
    BlockLayout::FromAdapterShape(1000, 1000, {64, 16, 16});
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("[64, 16, 16]"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("[63, 16, 16]"));
  }
}

}  // namespace
}  // namespace diablo::kernels
