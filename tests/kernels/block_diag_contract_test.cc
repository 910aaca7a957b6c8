// The ops' contract (kernels/block_diag_contract.h) on the CPU: what the CUDA
// path refuses, the CPU path refuses too, so CPU-only CI catches a caller
// that would only fail on a GPU; and the autograd ops keep to it in bf16 and
// fp16, dropout included, against a dense reference.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/generated/variable_factories.h>

#include <stdexcept>
#include <string>

#include "kernels/block_diag.h"
#include "kernels/block_diag_autograd.h"
#include "tests/kernels/reference.h"

namespace diablo::kernels {
namespace {

using testing::DenseBlockDiag;
using testing::RelErr;

// Runs `op`, expects std::invalid_argument whose message contains `needle`.
template <typename Op>
void ExpectRefused(Op op, const std::string& needle) {
  try {
    op();
    ADD_FAILURE() << "accepted; expected an error mentioning \"" << needle << "\"";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

class BlockDiagContract : public ::testing::Test {
 protected:
  const BlockLayout l = BlockLayout::For(32, 48, 4);
  const at::Tensor A = at::randn({l.blocks, l.block_in, l.block_out});
};

TEST_F(BlockDiagContract, ActivationsOfTwoDtypesAreRefusedInEveryOp) {
  const at::Tensor x16 = at::randn({5, 32}).to(at::kBFloat16);
  at::Tensor y32 = at::zeros({5, 48});
  ExpectRefused([&] { BlockDiagForwardInto(y32, x16, A, l); }, "one dtype");
  at::Tensor dx32 = at::zeros({5, 32});
  const at::Tensor dy16 = at::randn({5, 48}).to(at::kHalf);
  ExpectRefused([&] { BlockDiagBackwardInputInto(dx32, dy16, A, l); }, "one dtype");
  ExpectRefused([&] { BlockDiagBackwardWeight(x16, dy16, l); }, "one dtype");
  // One dtype is fine whichever it is.
  at::Tensor y16 = at::zeros({5, 48}, at::kBFloat16);
  EXPECT_NO_THROW(BlockDiagForwardInto(y16, x16, A, l));
}

TEST_F(BlockDiagContract, AnOutputThatOverlapsItsInputOrItselfIsRefused) {
  const BlockLayout square = BlockLayout::For(32, 32, 4);
  const at::Tensor Asq = at::randn({square.blocks, square.block_in, square.block_out});
  at::Tensor xy = at::randn({5, 32});
  ExpectRefused([&] { BlockDiagForwardInto(xy, xy, Asq, square); }, "overlaps");
  at::Tensor expanded = at::zeros({1, 48}).expand({5, 48});
  ExpectRefused([&] { BlockDiagForwardInto(expanded, at::randn({5, 32}), A, l); }, "share memory");
}

TEST_F(BlockDiagContract, TensorsOnAnotherDeviceThanTheAdapterAreRefused) {
  // The meta device stands in for a GPU: no data, but a device of its own.
  at::Tensor y = at::zeros({5, 48});
  const at::Tensor x_meta = at::empty({5, 32}, at::TensorOptions(at::kMeta));
  at::Tensor y_meta = at::empty({5, 48}, at::TensorOptions(at::kMeta));
  ExpectRefused([&] { BlockDiagForwardInto(y_meta, x_meta, A, l); }, "device");
  ExpectRefused([&] { BlockDiagForwardInto(y, x_meta, A, l); }, "device");
}

// y = x W^T + blockdiag(dropout(x), A) in bf16 and fp16 weights, forward and
// backward, against the same computed densely in fp64; with dropout the
// input gradient's adapter part must be, element by element, either zero or
// the undropped value times 1/(1-p).
TEST(BlockDiagLinearHalf, GradientsMatchTheDenseReferenceWithAndWithoutDropout) {
  at::manual_seed(11);
  const BlockLayout l = BlockLayout::For(64, 40, 8);
  for (const auto dtype : {at::kBFloat16, at::kHalf}) {
    SCOPED_TRACE(c10::toString(dtype));
    const double tol = dtype == at::kBFloat16 ? 2e-2 : 4e-3;
    const at::Tensor W = (at::randn({40, 64}) * 0.1).to(dtype);
    const at::Tensor A0 = at::randn({l.blocks, l.block_in, l.block_out}) * 0.1;
    const at::Tensor x0 = at::randn({3, 7, 64}).to(dtype);
    const at::Tensor dy = at::randn({3, 7, 40}).to(dtype);

    // Reference in fp64 with dense matrices, no kernel code.
    const at::Tensor Wd = W.to(at::kDouble), xd = x0.to(at::kDouble), dyd = dy.to(at::kDouble);
    const at::Tensor Ad = A0.to(at::kDouble).set_requires_grad(true);
    const at::Tensor D = DenseBlockDiag(Ad, 64, 40);
    const at::Tensor y_ref = (at::matmul(xd, Wd.t()) + at::matmul(xd, D)).detach();
    const at::Tensor dx_base = at::matmul(dyd, Wd);
    const at::Tensor dx_adapter = at::matmul(dyd, D.t()).detach();
    (at::matmul(xd, D) * dyd).sum().backward();
    const at::Tensor dA_ref = Ad.grad();

    for (const double p : {0.0, 0.25}) {
      SCOPED_TRACE("dropout " + std::to_string(p));
      at::Tensor x = x0.clone().set_requires_grad(true);
      at::Tensor A = A0.clone().set_requires_grad(true);
      at::Tensor y = BlockDiagLinear(x, W, at::Tensor(), A, l, p, /*training=*/true);
      ASSERT_EQ(y.scalar_type(), dtype);
      y.backward(dy);
      ASSERT_EQ(x.grad().scalar_type(), dtype);
      ASSERT_EQ(A.grad().scalar_type(), at::kFloat);
      const at::Tensor adapter_part = x.grad().to(at::kDouble) - dx_base;
      if (p == 0.0) {
        EXPECT_LT(RelErr(y, y_ref), tol);
        EXPECT_LT(RelErr(adapter_part + dx_base, dx_base + dx_adapter), tol);
        EXPECT_LT(RelErr(A.grad(), dA_ref), tol);
        continue;
      }
      // Each element kept (scaled) or dropped.
      const at::Tensor kept = dx_adapter / (1.0 - p);
      const double scale = kept.abs().max().item<double>();
      const at::Tensor off_kept = (adapter_part - kept).abs(), off_dropped = adapter_part.abs();
      EXPECT_LT(at::minimum(off_kept, off_dropped).max().item<double>() / scale, 2 * tol);
      const double dropped_share = (off_dropped < off_kept).to(at::kDouble).mean().item<double>();
      EXPECT_GT(dropped_share, 0.1);
      EXPECT_LT(dropped_share, 0.4);
      EXPECT_TRUE(at::isfinite(A.grad()).all().item<bool>());
    }
  }
}

}  // namespace
}  // namespace diablo::kernels
