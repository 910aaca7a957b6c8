// LoRALinear against a dense reference (y = x W^T + b + s x A^T B^T with
// autograd), its initialisations (Kaiming-uniform, PiSSA, MiLoRA) checked
// through singular values computed independently, and merge/unmerge.
#include "worker/peft/lora_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "tests/kernels/reference.h"

namespace diablo::peft {
namespace {

using testing::RelErr;

// W = U diag(s) V^T with s = 10, 9.5, ... well separated, so singular
// directions are well defined.
at::Tensor WeightWithKnownSpectrum(int64_t out, int64_t in, at::Tensor* spectrum) {
  const int64_t k = std::min(in, out);
  const at::Tensor U = std::get<0>(at::linalg_qr(at::randn({out, k}, at::kDouble)));
  const at::Tensor V = std::get<0>(at::linalg_qr(at::randn({in, k}, at::kDouble)));
  const at::Tensor s = at::linspace(10.0, 0.5, k, at::kDouble);
  *spectrum = s;
  return at::mm(U * s, V.t()).to(at::kFloat);
}

TEST(LoRALinear, DefaultInitIsKaimingUniformAAndZeroB) {
  at::manual_seed(20);
  const at::Tensor W = at::randn({96, 400}), b = at::randn({96});
  LoRALinear layer(W, b, 8, 16.0);
  EXPECT_EQ(layer->lora_A().sizes(), (std::vector<int64_t>{8, 400}));
  EXPECT_EQ(layer->lora_B().sizes(), (std::vector<int64_t>{96, 8}));
  EXPECT_TRUE(layer->lora_B().eq(0).all().item<bool>());
  const double bound = 1.0 / std::sqrt(400.0);
  EXPECT_LE(layer->lora_A().abs().max().item<double>(), bound);
  EXPECT_GT(layer->lora_A().abs().max().item<double>(), 0.9 * bound);  // fills the range
  EXPECT_DOUBLE_EQ(layer->scaling(), 2.0);
  const at::Tensor x = at::randn({5, 400});
  EXPECT_LT(RelErr(layer->forward(x), at::linear(x, W, b)), 1e-6);
}

TEST(LoRALinear, ForwardAndGradientsMatchDenseReference) {
  at::manual_seed(21);
  for (bool with_bias : {true, false}) {
    const at::Tensor W = at::randn({72, 56}) * 0.1;
    const at::Tensor b = with_bias ? at::randn({72}) : at::Tensor();
    LoRALinear layer(W, b, 4, 8.0);
    {
      at::NoGradGuard no_grad;
      layer->lora_B().normal_();
    }
    const at::Tensor x = at::randn({3, 5, 56}).requires_grad_();
    const at::Tensor y = layer->forward(x);
    const at::Tensor dy = at::randn_like(y);
    y.backward(dy);

    const at::Tensor x_ref = x.detach().to(at::kDouble).requires_grad_();
    const at::Tensor A_ref = layer->lora_A().detach().to(at::kDouble).requires_grad_();
    const at::Tensor B_ref = layer->lora_B().detach().to(at::kDouble).requires_grad_();
    at::Tensor y_ref = at::matmul(x_ref, W.to(at::kDouble).t()) +
                       2.0 * at::matmul(at::matmul(x_ref, A_ref.t()), B_ref.t());
    if (with_bias) y_ref = y_ref + b.to(at::kDouble);
    y_ref.backward(dy.to(at::kDouble));

    EXPECT_LT(RelErr(y, y_ref), 1e-5);
    EXPECT_LT(RelErr(x.grad(), x_ref.grad()), 1e-5);
    EXPECT_LT(RelErr(layer->lora_A().grad(), A_ref.grad()), 1e-5);
    EXPECT_LT(RelErr(layer->lora_B().grad(), B_ref.grad()), 1e-5);
    EXPECT_FALSE(layer->weight().grad().defined());
  }
}

void ExpectSvdInit(LoRAInit init) {
  at::manual_seed(22);
  const int64_t out = 48, in = 40, r = 6;
  at::Tensor s;
  const at::Tensor W = WeightWithKnownSpectrum(out, in, &s);
  const at::Tensor b = at::randn({out});
  const at::Tensor W_before = W.clone();
  LoRALinear layer(W, b, r, 12.0, 0.0, init);
  EXPECT_NE(layer->weight().data_ptr(), W.data_ptr()) << "the residual must be a new tensor";
  EXPECT_TRUE(W.equal(W_before)) << "the caller's weight (maybe tied elsewhere) must not change";

  // The layer's initial output is the base layer's output.
  const at::Tensor x = at::randn({9, in});
  EXPECT_LT(RelErr(layer->forward(x), at::linear(x, W, b)), 1e-5);

  // scale * B A holds exactly the chosen singular values, the residual the rest.
  const at::Tensor delta =
      layer->scaling() * at::mm(layer->lora_B(), layer->lora_A()).to(at::kDouble);
  const at::Tensor delta_s = at::linalg_svdvals(delta).narrow(0, 0, r);
  const at::Tensor residual_s = at::linalg_svdvals(layer->weight().to(at::kDouble));
  const int64_t k = s.size(0);
  if (init == LoRAInit::kPiSSA) {
    EXPECT_LT(RelErr(delta_s, s.narrow(0, 0, r)), 1e-5);
    EXPECT_LT(RelErr(residual_s.narrow(0, 0, k - r), s.narrow(0, r, k - r)), 1e-5);
  } else {
    EXPECT_LT(RelErr(delta_s, s.narrow(0, k - r, r)), 1e-4);
    EXPECT_LT(RelErr(residual_s.narrow(0, 0, k - r), s.narrow(0, 0, k - r)), 1e-5);
  }
  // A and B carry sqrt(S_r / scale) each, as PEFT splits them.
  const at::Tensor a_norms = layer->lora_A().to(at::kDouble).norm(2, {1});
  const at::Tensor expected =
      (init == LoRAInit::kPiSSA ? s.narrow(0, 0, r) : s.narrow(0, k - r, r)) / layer->scaling();
  EXPECT_LT(RelErr(a_norms.pow(2), expected), 1e-4);
}

TEST(LoRALinear, PissaUsesTheLargestSingularDirectionsAndKeepsTheOutput) {
  ExpectSvdInit(LoRAInit::kPiSSA);
}

TEST(LoRALinear, MiloraUsesTheSmallestSingularDirectionsAndKeepsTheOutput) {
  ExpectSvdInit(LoRAInit::kMiLoRA);
}

TEST(LoRALinear, MergeAndUnmergeRoundTrip) {
  at::manual_seed(23);
  const at::Tensor W = at::randn({64, 32});
  LoRALinear layer(W.clone(), at::randn({64}), 8, 16.0);
  {
    at::NoGradGuard no_grad;
    layer->lora_B().normal_();
  }
  const at::Tensor x = at::randn({4, 32});
  const at::Tensor unmerged = layer->forward(x).detach();
  layer->merge();
  EXPECT_LT(RelErr(layer->weight(), W + 2.0 * at::mm(layer->lora_B(), layer->lora_A())), 1e-6);
  EXPECT_LT(RelErr(layer->forward(x), unmerged), 1e-5);
  layer->unmerge();
  EXPECT_LT(RelErr(layer->weight(), W), 1e-6);
  EXPECT_LT(RelErr(layer->forward(x), unmerged), 1e-5);
}

TEST(LoRALinear, Bf16LayerKeepsFp32AdapterAndIsClose) {
  at::manual_seed(24);
  LoRALinear layer(at::randn({64, 48}) * 0.1, at::Tensor(), 4, 4.0);
  {
    at::NoGradGuard no_grad;
    layer->lora_B().normal_(0.0, 0.1);
  }
  const at::Tensor x = at::randn({6, 48});
  const at::Tensor reference = layer->forward(x).detach();
  layer->to(at::kBFloat16);
  EXPECT_EQ(layer->lora_A().scalar_type(), at::kFloat);
  EXPECT_EQ(layer->lora_B().scalar_type(), at::kFloat);
  const at::Tensor y = layer->forward(x.to(at::kBFloat16));
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  EXPECT_LT(RelErr(y, reference), 2e-2);
}

TEST(LoRALinear, DropoutOnlyInTraining) {
  at::manual_seed(25);
  LoRALinear layer(at::randn({32, 32}), at::Tensor(), 4, 4.0, 0.5);
  {
    at::NoGradGuard no_grad;
    layer->lora_B().normal_();
  }
  const at::Tensor x = at::randn({16, 32});
  layer->eval();
  const at::Tensor e1 = layer->forward(x), e2 = layer->forward(x);
  EXPECT_TRUE(e1.equal(e2));
  layer->train();
  EXPECT_FALSE(layer->forward(x).equal(layer->forward(x)));
}

TEST(LoRALinear, RejectsBadArguments) {
  const at::Tensor W = at::randn({16, 8});
  EXPECT_THROW(LoRALinear(W, at::Tensor(), 0, 1.0), std::invalid_argument);
  EXPECT_THROW(LoRALinear(W, at::Tensor(), 4, 0.0), std::invalid_argument);
  EXPECT_THROW(LoRALinear(W, at::Tensor(), 4, 1.0, 1.5), std::invalid_argument);
  EXPECT_THROW(LoRALinear(W, at::Tensor(), 9, 1.0, 0.0, LoRAInit::kPiSSA), std::invalid_argument);
  EXPECT_NO_THROW(LoRALinear(W, at::Tensor(), 9, 1.0));
}

}  // namespace
}  // namespace diablo::peft
