// DiaBloLinear against a dense reference: y = x W^T + b + x D with
// D = blockdiag(A)[:in, :out] built from A with ordinary autograd ops, for the
// output and both gradients; merge/unmerge, dropout, dtypes and misuse.
#include "worker/peft/diablo_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "tests/kernels/reference.h"

namespace diablo::peft {
namespace {

using testing::DenseBlockDiag;
using testing::RelErr;

struct Case {
  int64_t in, out, n;
  bool bias;
};

const std::vector<Case> kCases = {
    {64, 64, 8, true},       // square
    {48, 160, 8, false},     // wide
    {160, 48, 8, true},      // tall
    {1000, 1000, 64, true},  // 63 blocks
    {1000, 640, 64, false},  // N_eff = N, empty last block on the input side
    {640, 1000, 64, true},   // ... and on the output side
    {37, 53, 5, true},       // partial blocks on both sides
    {10, 100, 64, false},    // many empty input blocks
};

std::string Name(const Case& c) {
  return "in=" + std::to_string(c.in) + " out=" + std::to_string(c.out) +
         " N=" + std::to_string(c.n);
}

DiaBloLinear MakeLayer(const Case& c, double dropout = 0.0) {
  const at::Tensor W = at::randn({c.out, c.in}) / std::sqrt(static_cast<double>(c.in));
  const at::Tensor b = c.bias ? at::randn({c.out}) : at::Tensor();
  DiaBloLinear layer(W, b, c.n, dropout);
  at::NoGradGuard no_grad;
  layer->block_A().normal_(0.0, 0.1);  // a trained-looking adapter
  return layer;
}

TEST(DiaBloLinear, ForwardAndGradientsMatchDenseReference) {
  at::manual_seed(10);
  for (const Case& c : kCases) {
    SCOPED_TRACE(Name(c));
    DiaBloLinear layer = MakeLayer(c);
    for (std::vector<int64_t> lead : {std::vector<int64_t>{33}, {4, 9}}) {
      SCOPED_TRACE(lead.size() == 1 ? "2-D input" : "3-D input");
      std::vector<int64_t> shape = lead;
      shape.push_back(c.in);
      const at::Tensor x = at::randn(shape).requires_grad_();
      layer->block_A().mutable_grad() = at::Tensor();
      const at::Tensor y = layer->forward(x);
      const at::Tensor dy = at::randn_like(y);
      y.backward(dy);

      const at::Tensor x_ref = x.detach().to(at::kDouble).requires_grad_();
      const at::Tensor A_ref = layer->block_A().detach().to(at::kDouble).requires_grad_();
      at::Tensor y_ref = at::matmul(x_ref, layer->weight().to(at::kDouble).t()) +
                         at::matmul(x_ref, DenseBlockDiag(A_ref, c.in, c.out));
      if (c.bias) y_ref = y_ref + layer->bias().to(at::kDouble);
      y_ref.backward(dy.to(at::kDouble));

      EXPECT_EQ(y.sizes(), y_ref.sizes());
      EXPECT_LT(RelErr(y, y_ref), 1e-5);
      EXPECT_LT(RelErr(x.grad(), x_ref.grad()), 1e-5);
      EXPECT_LT(RelErr(layer->block_A().grad(), A_ref.grad()), 1e-5);
      EXPECT_FALSE(layer->weight().grad().defined());
    }
  }
}

TEST(DiaBloLinear, StartsEqualToTheBaseLayer) {
  const at::Tensor W = at::randn({48, 32}), b = at::randn({48});
  DiaBloLinear layer(W, b, 4);
  EXPECT_TRUE(layer->block_A().eq(0).all().item<bool>());
  const at::Tensor x = at::randn({5, 32});
  EXPECT_LT(RelErr(layer->forward(x), at::linear(x, W, b)), 1e-6);
}

TEST(DiaBloLinear, InputWithoutGradStillTrainsTheAdapter) {
  DiaBloLinear layer = MakeLayer({37, 53, 5, true});
  const at::Tensor x = at::randn({6, 37});
  layer->forward(x).sum().backward();
  ASSERT_TRUE(layer->block_A().grad().defined());
  const at::Tensor A_ref = layer->block_A().detach().to(at::kDouble).requires_grad_();
  at::matmul(x.to(at::kDouble), DenseBlockDiag(A_ref, 37, 53)).sum().backward();
  EXPECT_LT(RelErr(layer->block_A().grad(), A_ref.grad()), 1e-5);
}

TEST(DiaBloLinear, MergeAndUnmergeRoundTrip) {
  at::manual_seed(11);
  for (const Case& c : kCases) {
    SCOPED_TRACE(Name(c));
    DiaBloLinear layer = MakeLayer(c);
    const at::Tensor W0 = layer->weight().clone();
    const at::Tensor x = at::randn({7, c.in});
    const at::Tensor unmerged = layer->forward(x).detach();

    layer->merge();
    EXPECT_TRUE(layer->merged());
    const at::Tensor D = DenseBlockDiag(layer->block_A().detach().to(at::kDouble), c.in, c.out);
    EXPECT_LT(RelErr(layer->weight(), W0.to(at::kDouble) + D.t()), 1e-6);
    EXPECT_LT(RelErr(layer->forward(x), unmerged), 1e-5);
    layer->merge();  // idempotent
    EXPECT_LT(RelErr(layer->forward(x), unmerged), 1e-5);

    layer->unmerge();
    EXPECT_FALSE(layer->merged());
    EXPECT_LT(RelErr(layer->weight(), W0), 1e-6);
    EXPECT_LT(RelErr(layer->forward(x), unmerged), 1e-5);
  }
}

TEST(DiaBloLinear, MergedForwardSkipsTheAdapter) {
  DiaBloLinear layer = MakeLayer({64, 64, 8, true});
  const at::Tensor x = at::randn({3, 64});
  layer->merge();
  const at::Tensor before = layer->forward(x);
  {
    at::NoGradGuard no_grad;
    layer->block_A().add_(1.0);  // would change the output if the adapter still ran
  }
  EXPECT_TRUE(layer->forward(x).equal(before));
}

TEST(DiaBloLinear, Bf16LayerIsCloseToFp32Reference) {
  at::manual_seed(12);
  const Case c{1000, 640, 64, true};
  DiaBloLinear layer = MakeLayer(c);
  layer->to(at::kBFloat16);
  EXPECT_EQ(layer->weight().scalar_type(), at::kBFloat16);
  EXPECT_EQ(layer->block_A().scalar_type(), at::kFloat) << "the adapter must stay fp32";
  EXPECT_TRUE(layer->block_A().requires_grad());

  const at::Tensor x = at::randn({2, 8, c.in}).to(at::kBFloat16).requires_grad_();
  const at::Tensor y = layer->forward(x);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  const at::Tensor dy = at::randn_like(y);
  y.backward(dy);

  const at::Tensor x_ref = x.detach().to(at::kDouble).requires_grad_();
  const at::Tensor A_ref = layer->block_A().detach().to(at::kDouble).requires_grad_();
  const at::Tensor y_ref = at::matmul(x_ref, layer->weight().to(at::kDouble).t()) +
                           layer->bias().to(at::kDouble) +
                           at::matmul(x_ref, DenseBlockDiag(A_ref, c.in, c.out));
  y_ref.backward(dy.to(at::kDouble));
  EXPECT_LT(RelErr(y, y_ref), 2e-2);
  EXPECT_LT(RelErr(x.grad(), x_ref.grad()), 2e-2);
  EXPECT_EQ(layer->block_A().grad().scalar_type(), at::kFloat);
  EXPECT_LT(RelErr(layer->block_A().grad(), A_ref.grad()), 1e-5);
}

TEST(DiaBloLinear, DropoutActsOnTheAdapterInputInTrainingOnly) {
  at::manual_seed(13);
  const int64_t d = 256;
  const double p = 0.5;
  const at::Tensor W = at::randn({d, d}) * 0.05, b = at::randn({d});
  DiaBloLinear layer(W, b, 16, p);
  {
    // Identity blocks make the adapter's output the dropped-out input itself,
    // which exposes the mask the op drew.
    at::NoGradGuard no_grad;
    layer->block_A().copy_(at::eye(16).expand({16, 16, 16}));
  }
  const at::Tensor x = at::randn({64, d}).requires_grad_();
  const at::Tensor base = at::linear(x.detach(), W, b);

  layer->train();
  const at::Tensor y = layer->forward(x);
  const at::Tensor z = (y - base).detach();
  const at::Tensor mask = z.ne(0);
  const double kept = mask.to(at::kDouble).mean().item<double>();
  EXPECT_GT(kept, 0.4);
  EXPECT_LT(kept, 0.6);
  EXPECT_LT(RelErr(z, x.detach() * mask / (1 - p)), 1e-5);

  const at::Tensor dy = at::randn_like(y);
  y.backward(dy);
  // Reference gradients with that mask: the base path sees x unchanged.
  const at::Tensor x_ref = x.detach().to(at::kDouble).requires_grad_();
  const at::Tensor A_ref = layer->block_A().detach().to(at::kDouble).requires_grad_();
  const at::Tensor y_ref = at::matmul(x_ref, W.to(at::kDouble).t()) +
                           at::matmul(x_ref * mask / (1 - p), DenseBlockDiag(A_ref, d, d));
  y_ref.backward(dy.to(at::kDouble));
  EXPECT_LT(RelErr(x.grad(), x_ref.grad()), 1e-5);
  EXPECT_LT(RelErr(layer->block_A().grad(), A_ref.grad()), 1e-5);

  // Two training calls draw different masks; eval mode uses no dropout.
  EXPECT_FALSE(layer->forward(x).detach().equal(y.detach()));
  layer->eval();
  EXPECT_LT(RelErr(layer->forward(x), base + x.detach()), 1e-5);
}

TEST(DiaBloLinear, ParametersHaveHuggingFaceNamesAndOnlyTheAdapterTrains) {
  DiaBloLinear layer(at::randn({20, 30}), at::randn({20}), 4);
  const auto params = layer->named_parameters();
  ASSERT_EQ(params.size(), 3u);
  EXPECT_FALSE(params["weight"].requires_grad());
  EXPECT_FALSE(params["bias"].requires_grad());
  EXPECT_TRUE(params["block_A"].requires_grad());
  EXPECT_EQ(params["block_A"].sizes(), (std::vector<int64_t>{4, 8, 5}));
  ASSERT_EQ(layer->trainable_parameters().size(), 1u);
  EXPECT_TRUE(layer->trainable_parameters()[0].is_same(params["block_A"]));
  EXPECT_EQ(layer->layout().blocks, 4);
}

TEST(DiaBloLinear, WrapsWithoutCopyingTheWeight) {
  const at::Tensor W = at::randn({16, 16}).requires_grad_();
  DiaBloLinear layer(W, at::Tensor(), 4);
  EXPECT_EQ(layer->weight().data_ptr(), W.data_ptr());
  EXPECT_TRUE(W.requires_grad()) << "the caller's tensor flags are left alone";
}

TEST(DiaBloLinear, RejectsMisuseWithClearErrors) {
  EXPECT_THROW(DiaBloLinear(at::randn({4}), at::Tensor(), 2), std::invalid_argument);
  EXPECT_THROW(DiaBloLinear(at::randn({4, 4}), at::randn({5}), 2), std::invalid_argument);
  EXPECT_THROW(DiaBloLinear(at::randn({4, 4}), at::Tensor(), 0), std::invalid_argument);
  EXPECT_THROW(DiaBloLinear(at::randn({4, 4}), at::Tensor(), 2, 1.0), std::invalid_argument);
  DiaBloLinear layer(at::randn({8, 8}), at::Tensor(), 2);
  EXPECT_THROW(layer->forward(at::randn({3, 7})), std::invalid_argument);
  EXPECT_THROW(layer->forward(at::randn({3, 8}, at::kDouble)), std::invalid_argument);
  layer->weight().requires_grad_(true);
  try {
    layer->forward(at::randn({3, 8}));
    FAIL() << "a trainable base weight must be rejected";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("frozen"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace diablo::peft
