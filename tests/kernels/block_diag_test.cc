// The block-diagonal primitives of kernels/block_diag.h against the literal
// definition in DESIGN.md (zero-pad x to N_eff*b_in, view as blocks, multiply
// each by A[n], flatten, keep the first `out` columns), over many layouts,
// dtypes and activation layouts, on each CPU path (BLAS and AVX-512).
#include "kernels/block_diag.h"

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/block_diag_cpu_kernels.h"
#include "tests/kernels/reference.h"

namespace diablo::kernels {
namespace {

using testing::DenseBlockDiag;
using testing::RelErr;

// z = blockdiag(x, A) exactly as the method is specified, in float64.
at::Tensor SpecForward(const at::Tensor& x, const at::Tensor& A, const BlockLayout& l) {
  const at::Tensor x2 = x.to(at::kDouble).reshape({-1, l.in});
  const at::Tensor padded = at::constant_pad_nd(x2, {0, l.blocks * l.block_in - l.in});
  const at::Tensor blocks = padded.view({-1, l.blocks, l.block_in}).transpose(0, 1);
  const at::Tensor z = at::bmm(blocks, A.to(at::kDouble)).transpose(0, 1).reshape({x2.size(0), -1});
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = l.out;
  return z.narrow(1, 0, l.out).reshape(shape);
}

struct Case {
  int64_t in, out, n;
};

const std::vector<Case> kCases = {
    {64, 64, 8},       // square, divisible
    {48, 160, 8},      // wide
    {160, 48, 8},      // tall
    {1000, 1000, 64},  // 63 blocks of 16
    {1000, 640, 64},   // N_eff = 64, input side has an empty last block
    {640, 1000, 64},   // the same on the output side
    {37, 53, 5},       // both sides partial
    {10, 100, 64},     // in side: 10 blocks of 1, out side 50 blocks of 2
    {7, 7, 1},         // one block
    {5, 3, 100},       // N larger than both sizes
    {300, 260, 2},     // 150x130 blocks: several column groups per tile
};

// Runs a test once per CPU implementation.
class BlockDiagPath : public ::testing::TestWithParam<cpu::Path> {
 protected:
  void SetUp() override {
    if (GetParam() == cpu::Path::kAvx512 && !cpu::CpuHasAvx512()) {
      GTEST_SKIP() << "this CPU has no AVX-512";
    }
    cpu::SetPathForTesting(GetParam());
  }
  void TearDown() override { cpu::SetPathForTesting(cpu::Path::kAuto); }
};

INSTANTIATE_TEST_SUITE_P(Cpu, BlockDiagPath,
                         ::testing::Values(cpu::Path::kBlas, cpu::Path::kAvx512),
                         [](const ::testing::TestParamInfo<cpu::Path>& info) {
                           return info.param == cpu::Path::kBlas ? "Blas" : "Avx512";
                         });

TEST(BlockDiag, AutoPathPicksAvx512ForSmallBlocksOnlyWhenTheCpuHasIt) {
  const cpu::Path small = cpu::ChoosePath(BlockLayout::For(4096, 4096, 64));
  const cpu::Path large = cpu::ChoosePath(BlockLayout::For(4096, 4096, 16));
  EXPECT_EQ(small, cpu::CpuHasAvx512() ? cpu::Path::kAvx512 : cpu::Path::kBlas);
  EXPECT_EQ(large, cpu::Path::kBlas);
}

std::string Name(const Case& c) {
  return "in=" + std::to_string(c.in) + " out=" + std::to_string(c.out) +
         " N=" + std::to_string(c.n);
}

TEST_P(BlockDiagPath, ForwardAddsSpecResultIntoY) {
  at::manual_seed(1);
  for (const Case& c : kCases) {
    SCOPED_TRACE(Name(c));
    const BlockLayout l = BlockLayout::For(c.in, c.out, c.n);
    const at::Tensor A = at::randn({l.blocks, l.block_in, l.block_out});
    for (std::vector<int64_t> lead : {std::vector<int64_t>{1}, {17}, {3, 5}, {2, 2, 3}}) {
      std::vector<int64_t> xs = lead, ys = lead;
      xs.push_back(c.in);
      ys.push_back(c.out);
      const at::Tensor x = at::randn(xs), y0 = at::randn(ys);
      at::Tensor y = y0.clone();
      BlockDiagForwardInto(y, x, A, l);
      EXPECT_LT(RelErr(y - y0, SpecForward(x, A, l)), 1e-5);
    }
  }
}

TEST(BlockDiag, DenseReferenceAgreesWithSpec) {
  // Guards the reference the module tests use.
  const BlockLayout l = BlockLayout::For(37, 53, 5);
  const at::Tensor A = at::randn({l.blocks, l.block_in, l.block_out}, at::kDouble);
  const at::Tensor x = at::randn({4, 37}, at::kDouble);
  EXPECT_LT(RelErr(at::mm(x, DenseBlockDiag(A, 37, 53)), SpecForward(x, A, l)), 1e-12);
}

TEST_P(BlockDiagPath, BackwardsMatchAutogradOfTheSpec) {
  at::manual_seed(2);
  for (const Case& c : kCases) {
    SCOPED_TRACE(Name(c));
    const BlockLayout l = BlockLayout::For(c.in, c.out, c.n);
    const at::Tensor A = at::randn({l.blocks, l.block_in, l.block_out});
    const at::Tensor x = at::randn({3, 7, c.in}), dy = at::randn({3, 7, c.out});

    const at::Tensor x_ref = x.to(at::kDouble).requires_grad_();
    const at::Tensor A_ref = A.to(at::kDouble).requires_grad_();
    const at::Tensor z = at::matmul(x_ref, DenseBlockDiag(A_ref, c.in, c.out));
    z.backward(dy.to(at::kDouble));

    const at::Tensor dx0 = at::randn_like(x);
    at::Tensor dx = dx0.clone();
    BlockDiagBackwardInputInto(dx, dy, A, l);
    EXPECT_LT(RelErr(dx - dx0, x_ref.grad()), 1e-5);

    const at::Tensor dA = BlockDiagBackwardWeight(x, dy, l);
    EXPECT_EQ(dA.sizes(), A.sizes());
    EXPECT_EQ(dA.scalar_type(), at::kFloat);
    EXPECT_LT(RelErr(dA, A_ref.grad()), 1e-5);
  }
}

TEST_P(BlockDiagPath, PaddingPartOfTheAdapterGetsExactlyZeroGradient) {
  const BlockLayout l = BlockLayout::For(37, 53, 5);  // blocks of 8x11, last block clipped
  const at::Tensor dA = BlockDiagBackwardWeight(at::randn({9, 37}), at::randn({9, 53}), l);
  const int64_t last = l.blocks - 1;
  const int64_t in_last = 37 - last * l.block_in, out_last = 53 - last * l.block_out;
  EXPECT_TRUE(dA[last].narrow(0, in_last, l.block_in - in_last).eq(0).all().item<bool>());
  EXPECT_TRUE(dA[last].narrow(1, out_last, l.block_out - out_last).eq(0).all().item<bool>());
  EXPECT_FALSE(dA[last].narrow(0, 0, in_last).narrow(1, 0, out_last).eq(0).all().item<bool>());
}

TEST_P(BlockDiagPath, StridedActivationsGiveTheSameResult) {
  // x as a column slice of a wider buffer (a fused projection's output) and
  // y as a column slice too: read and written in place.
  const BlockLayout l = BlockLayout::For(96, 80, 8);
  const at::Tensor A = at::randn({l.blocks, l.block_in, l.block_out});
  const at::Tensor xbuf = at::randn({10, 96 * 3});
  const at::Tensor x = xbuf.narrow(1, 96, 96);
  at::Tensor ybuf = at::zeros({10, 200});
  at::Tensor y = ybuf.narrow(1, 50, 80);
  BlockDiagForwardInto(y, x, A, l);
  EXPECT_LT(RelErr(ybuf.narrow(1, 50, 80), SpecForward(x.contiguous(), A, l)), 1e-5);
  EXPECT_TRUE(ybuf.narrow(1, 0, 50).eq(0).all().item<bool>());
  EXPECT_TRUE(ybuf.narrow(1, 130, 70).eq(0).all().item<bool>());
  // A transposed (column-major) activation matrix.
  const at::Tensor xt = at::randn({96, 10}).t();
  at::Tensor y2 = at::zeros({10, 80});
  BlockDiagForwardInto(y2, xt, A, l);
  EXPECT_LT(RelErr(y2, SpecForward(xt.contiguous(), A, l)), 1e-5);
}

TEST_P(BlockDiagPath, HalfPrecisionActivationsAccumulateInFp32) {
  at::manual_seed(3);
  const BlockLayout l = BlockLayout::For(1000, 640, 64);
  const at::Tensor A = at::randn({l.blocks, l.block_in, l.block_out}) * 0.1;
  for (auto dtype : {at::kBFloat16, at::kHalf}) {
    SCOPED_TRACE(c10::toString(dtype));
    const at::Tensor x = at::randn({4, 6, 1000}).to(dtype);
    const at::Tensor y0 = at::randn({4, 6, 640}).to(dtype);
    at::Tensor y = y0.clone();
    BlockDiagForwardInto(y, x, A, l);
    EXPECT_EQ(y.scalar_type(), dtype);
    // Reference: the same rounded inputs, exact arithmetic, one final rounding.
    const at::Tensor expected = y0.to(at::kDouble) + SpecForward(x, A, l);
    const double tol = dtype == at::kBFloat16 ? 1e-2 : 2e-3;
    EXPECT_LT(RelErr(y, expected), tol);

    const at::Tensor dy = at::randn({4, 6, 640}).to(dtype);
    const at::Tensor dA = BlockDiagBackwardWeight(x, dy, l);
    const at::Tensor x_ref = x.to(at::kDouble), dy_ref = dy.to(at::kDouble);
    const at::Tensor A_ref = A.to(at::kDouble).requires_grad_();
    at::matmul(x_ref, DenseBlockDiag(A_ref, 1000, 640)).backward(dy_ref);
    EXPECT_LT(RelErr(dA, A_ref.grad()), 1e-5);  // fp32 accumulation of exact bf16 products
  }
}

// Records CPU allocations made through c10's allocator while alive.
class AllocationCounter : public c10::Allocator {
 public:
  AllocationCounter() : base_(c10::GetCPUAllocator()) { c10::SetCPUAllocator(this, kPriority); }
  ~AllocationCounter() override { c10::SetCPUAllocator(base_, kPriority); }
  c10::DataPtr allocate(size_t n) override {
    ++count_;
    largest_ = std::max(largest_, n);
    return base_->allocate(n);
  }
  c10::DeleterFnPtr raw_deleter() const override { return base_->raw_deleter(); }
  void copy_data(void* dest, const void* src, std::size_t n) const override {
    base_->copy_data(dest, src, n);
  }
  int count() const { return count_; }
  size_t largest() const { return largest_; }

 private:
  static constexpr uint8_t kPriority = 200;
  c10::Allocator* base_;
  int count_ = 0;
  size_t largest_ = 0;
};

TEST_P(BlockDiagPath, Fp32OpsReadAndWriteActivationsWithoutCopies) {
  // Non-divisible sizes, so full and clipped blocks both run.  Parameter-
  // sized scratch (A^T, dA) is fine; nothing activation-sized may appear.
  const BlockLayout l = BlockLayout::For(1000, 640, 64);
  const at::Tensor A = at::randn({l.blocks, l.block_in, l.block_out});
  const at::Tensor x = at::randn({2, 64, 1000}), dy = at::randn({2, 64, 640});
  at::Tensor y = at::randn({2, 64, 640}), dx = at::randn({2, 64, 1000});
  const size_t adapter_bytes = static_cast<size_t>(A.numel()) * sizeof(float);
  const size_t smallest_activation = static_cast<size_t>(y.numel()) * sizeof(float);
  ASSERT_LT(adapter_bytes * 4, smallest_activation);
  {
    AllocationCounter counter;
    BlockDiagForwardInto(y, x, A, l);
    EXPECT_EQ(counter.count(), 0) << "the forward must not allocate at all";
  }
  {
    AllocationCounter counter;
    BlockDiagBackwardInputInto(dx, dy, A, l);
    const at::Tensor dA = BlockDiagBackwardWeight(x, dy, l);
    EXPECT_GE(counter.count(), 1);  // dA itself: the counter does see allocations
    EXPECT_LE(counter.largest(), adapter_bytes) << "an activation-sized copy was made";
  }
}

TEST_P(BlockDiagPath, EmptyBatchIsANoOp) {
  const BlockLayout l = BlockLayout::For(16, 16, 4);
  const at::Tensor A = at::randn({l.blocks, l.block_in, l.block_out});
  at::Tensor y = at::zeros({0, 16});
  BlockDiagForwardInto(y, at::zeros({0, 16}), A, l);
  EXPECT_TRUE(
      BlockDiagBackwardWeight(at::zeros({0, 16}), at::zeros({0, 16}), l).eq(0).all().item<bool>());
}

TEST(BlockDiag, RejectsMismatchedArgumentsWithClearErrors) {
  const BlockLayout l = BlockLayout::For(32, 48, 4);
  const at::Tensor A = at::zeros({l.blocks, l.block_in, l.block_out});
  at::Tensor y = at::zeros({5, 48});
  EXPECT_THROW(BlockDiagForwardInto(y, at::zeros({5, 31}), A, l), std::invalid_argument);
  EXPECT_THROW(BlockDiagForwardInto(y, at::zeros({6, 32}), A, l), std::invalid_argument);
  EXPECT_THROW(BlockDiagForwardInto(y, at::zeros({5, 32}), at::zeros({4, 8, 11}), l),
               std::invalid_argument);
  EXPECT_THROW(BlockDiagForwardInto(y, at::zeros({5, 32}), A.to(at::kBFloat16), l),
               std::invalid_argument);
  EXPECT_THROW(BlockDiagForwardInto(y, at::zeros({5, 32}, at::kInt), A, l), std::invalid_argument);
  try {
    BlockDiagForwardInto(y, at::zeros({5, 31}), A, l);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("[..., 32]"), std::string::npos) << e.what();
  }
}

TEST(BlockDiag, MergeAddsTheDenseBlockDiagonalTransposed) {
  at::manual_seed(4);
  for (const Case& c : kCases) {
    SCOPED_TRACE(Name(c));
    const BlockLayout l = BlockLayout::For(c.in, c.out, c.n);
    const at::Tensor A = at::randn({l.blocks, l.block_in, l.block_out});
    const at::Tensor W0 = at::randn({c.out, c.in});
    at::Tensor W = W0.clone();
    MergeIntoWeight(W, A, l);
    const at::Tensor D = DenseBlockDiag(A.to(at::kDouble), c.in, c.out);
    EXPECT_LT(RelErr(W, W0.to(at::kDouble) + D.t()), 1e-6);
    MergeIntoWeight(W, A, l, -1.0);
    EXPECT_LT(RelErr(W, W0), 1e-6);
  }
}

TEST(BlockDiag, MergeIntoBf16WeightRoundsOnce) {
  const BlockLayout l = BlockLayout::For(96, 64, 8);
  const at::Tensor A = at::randn({l.blocks, l.block_in, l.block_out}) * 1e-2;
  const at::Tensor W0 = at::randn({64, 96}).to(at::kBFloat16);
  at::Tensor W = W0.clone();
  MergeIntoWeight(W, A, l);
  const at::Tensor expected = (W0.to(at::kFloat) + DenseBlockDiag(A, 96, 64).t()).to(at::kBFloat16);
  EXPECT_TRUE(W.equal(expected));
}

}  // namespace
}  // namespace diablo::kernels
