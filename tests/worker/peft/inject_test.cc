// Injection on a small Llama-shaped module tree: which layers get adapters
// (plain names, "re:" patterns), freezing, parameter paths and counts, the
// model's output right after injection, and errors that leave the model as
// it was.
#include "worker/peft/inject.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <regex>
#include <stdexcept>
#include <string>

#include "kernels/block_diag.h"
#include "worker/peft/adapter_layer.h"
#include "worker/peft/diablo_linear.h"
#include "worker/peft/lora_linear.h"

namespace diablo::peft {
namespace {

using ::testing::HasSubstr;

// Calls a projection through its parent's registry, as model::ApplyLinear does.
at::Tensor Call(torch::nn::Module& parent, const std::string& name, const at::Tensor& x) {
  auto children = parent.named_children();
  torch::nn::Module* child = children[name].get();
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(child)) return linear->forward(x);
  return dynamic_cast<model::LinearLayer&>(*child).forward(x);
}

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t d, int64_t kv) {
    register_module("q_proj", torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(false)));
    register_module("k_proj", torch::nn::Linear(torch::nn::LinearOptions(d, kv).bias(false)));
    register_module("v_proj", torch::nn::Linear(torch::nn::LinearOptions(d, kv).bias(false)));
    register_module("o_proj", torch::nn::Linear(torch::nn::LinearOptions(d, d).bias(false)));
  }
  at::Tensor forward(const at::Tensor& x) {
    // Not attention, just every projection on the path.
    const at::Tensor kv = Call(*this, "k_proj", x) + Call(*this, "v_proj", x);
    return Call(*this, "o_proj",
                Call(*this, "q_proj", x) + kv.repeat({1, x.size(-1) / kv.size(-1)}));
  }
};
TORCH_MODULE(Attention);

struct MlpImpl : torch::nn::Module {
  MlpImpl(int64_t d, int64_t h) {
    register_module("gate_proj", torch::nn::Linear(torch::nn::LinearOptions(d, h).bias(false)));
    register_module("up_proj", torch::nn::Linear(torch::nn::LinearOptions(d, h).bias(false)));
    register_module("down_proj", torch::nn::Linear(torch::nn::LinearOptions(h, d).bias(false)));
  }
  at::Tensor forward(const at::Tensor& x) {
    return Call(*this, "down_proj",
                at::silu(Call(*this, "gate_proj", x)) * Call(*this, "up_proj", x));
  }
};
TORCH_MODULE(Mlp);

struct LayerImpl : torch::nn::Module {
  LayerImpl(int64_t d, int64_t kv, int64_t h) {
    attn = register_module("self_attn", Attention(d, kv));
    mlp = register_module("mlp", Mlp(d, h));
  }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor a = x + attn->forward(x);
    return a + mlp->forward(a);
  }
  Attention attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(Layer);

// embed_tokens, layers.{0,1,2}.{self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj}, lm_head.
struct ToyModel : torch::nn::Module {
  static constexpr int64_t kD = 48, kKv = 16, kHidden = 100, kVocab = 50, kLayers = 3;
  ToyModel() {
    register_module("embed_tokens", torch::nn::Embedding(kVocab, kD));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < kLayers; ++i) layers->push_back(Layer(kD, kKv, kHidden));
    register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(kD, kVocab).bias(false)));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = x;
    for (size_t i = 0; i < layers->size(); ++i) h = layers->at<LayerImpl>(i).forward(h);
    return Call(*this, "lm_head", h);
  }
  torch::nn::ModuleList layers{nullptr};
};

AdapterConfig DiaBlo(std::vector<std::string> targets, int64_t blocks = 8) {
  AdapterConfig config;
  config.method = Method::kDiaBlo;
  config.target_modules = std::move(targets);
  config.blocks = blocks;
  return config;
}

TEST(InjectAdapters, DefaultTargetsWrapEveryProjectionAndKeepTheOutput) {
  at::manual_seed(30);
  ToyModel model;
  const at::Tensor x = at::randn({4, ToyModel::kD});
  const at::Tensor before = model.forward(x).detach();

  const auto injected = InjectAdapters(model, DiaBlo(AdapterConfig{}.target_modules));
  ASSERT_EQ(injected.size(), 7u * ToyModel::kLayers);
  EXPECT_EQ(injected[0].path, "layers.0.self_attn.q_proj");
  EXPECT_EQ(injected[6].path, "layers.0.mlp.down_proj");
  EXPECT_EQ(injected.back().path, "layers.2.mlp.down_proj");
  for (const auto& a : injected) {
    EXPECT_NE(dynamic_cast<DiaBloLinearImpl*>(a.module.get()), nullptr) << a.path;
    EXPECT_EQ(a.layer, dynamic_cast<AdapterLayer*>(a.module.get()));
  }
  // The zero-initialised adapters leave the model's function unchanged.
  EXPECT_TRUE(model.forward(x).allclose(before, 1e-6, 1e-6));

  // Only the adapters train; the rest, including lm_head and embeddings, is frozen.
  const auto params = model.named_parameters();
  for (const auto& p : params) {
    const bool adapter = p.key().size() > 8 && p.key().substr(p.key().size() - 8) == ".block_A";
    EXPECT_EQ(p.value().requires_grad(), adapter) << p.key();
  }
  EXPECT_TRUE(params.contains("layers.1.self_attn.q_proj.weight"));
  EXPECT_TRUE(params.contains("layers.1.self_attn.q_proj.block_A"));

  // Trainable count, from the layouts: q,o 48x48; k,v 48->16; gate,up 48->100; down 100->48.
  auto count = [](int64_t in, int64_t out) {
    return kernels::BlockLayout::For(in, out, 8).parameters();
  };
  const int64_t per_layer =
      2 * count(48, 48) + 2 * count(48, 16) + 2 * count(48, 100) + count(100, 48);
  EXPECT_EQ(CountTrainableParameters(model), ToyModel::kLayers * per_layer);
  int64_t requires_grad = 0;
  for (const auto& p : params) requires_grad += p.value().requires_grad() ? p.value().numel() : 0;
  EXPECT_EQ(requires_grad, CountTrainableParameters(model));

  // Gradients reach every adapter through the model.
  model.forward(x).pow(2).sum().backward();
  for (const auto& a : FindAdapters(model)) {
    EXPECT_TRUE(a.layer->trainable_parameters()[0].grad().defined()) << a.path;
  }
}

TEST(InjectAdapters, PatternTargetsMatchTheWholeDottedPath) {
  ToyModel model;
  const auto injected =
      InjectAdapters(model, DiaBlo({R"(re:layers\.[02]\.self_attn\.(q|v)_proj)"}));
  ASSERT_EQ(injected.size(), 4u);
  EXPECT_EQ(injected[0].path, "layers.0.self_attn.q_proj");
  EXPECT_EQ(injected[1].path, "layers.0.self_attn.v_proj");
  EXPECT_EQ(injected[2].path, "layers.2.self_attn.q_proj");
  EXPECT_EQ(injected[3].path, "layers.2.self_attn.v_proj");
  // A partial match is not a match.
  ToyModel other;
  EXPECT_THROW(InjectAdapters(other, DiaBlo({"re:q_proj"})), std::invalid_argument);
}

TEST(InjectAdapters, PlainNamesMatchTheLastComponentOnly) {
  ToyModel model;
  const auto injected = InjectAdapters(model, DiaBlo({"lm_head", "up_proj"}));
  ASSERT_EQ(injected.size(), 4u);
  EXPECT_EQ(injected[0].path, "layers.0.mlp.up_proj");
  EXPECT_EQ(injected[3].path, "lm_head");
  EXPECT_EQ(FindAdapters(model).size(), 4u);
  EXPECT_EQ(FindAdapters(model)[3].path, "lm_head");
}

TEST(InjectAdapters, LoRACountsRankTimesInPlusOut) {
  ToyModel model;
  AdapterConfig config;
  config.method = Method::kLoRA;
  config.rank = 4;
  config.target_modules = {"q_proj", "down_proj"};
  const auto injected = InjectAdapters(model, config);
  ASSERT_EQ(injected.size(), 6u);
  EXPECT_NE(dynamic_cast<LoRALinearImpl*>(injected[0].module.get()), nullptr);
  EXPECT_EQ(CountTrainableParameters(model), ToyModel::kLayers * 4 * ((48 + 48) + (100 + 48)));
}

TEST(InjectAdapters, UnmatchedTargetIsAnErrorThatNamesItAndLeavesTheModelAlone) {
  ToyModel model;
  try {
    InjectAdapters(model, DiaBlo({"q_proj", "query"}));
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("'query'"));
    EXPECT_THAT(e.what(), HasSubstr("layers.0.self_attn.q_proj"));  // a hint of real names
  }
  EXPECT_TRUE(FindAdapters(model).empty());
  for (const auto& p : model.parameters()) EXPECT_TRUE(p.requires_grad());
}

TEST(InjectAdapters, RejectsBadPatternsNonLinearMatchesAndDoubleInjection) {
  ToyModel model;
  EXPECT_THROW(InjectAdapters(model, DiaBlo({"re:layers\\.(["})), std::invalid_argument);
  try {
    InjectAdapters(model, DiaBlo({"mlp"}));
    FAIL() << "a non-Linear match must be rejected";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("layers.0.mlp"));
  }
  EXPECT_THROW(InjectAdapters(model, DiaBlo({"q_proj"}, 0)), std::invalid_argument);
  InjectAdapters(model, DiaBlo({"q_proj"}));
  EXPECT_THROW(InjectAdapters(model, DiaBlo({"q_proj"})), std::invalid_argument);
}

TEST(InjectAdapters, MergeAllThroughTheAdapterInterfaceKeepsTheOutput) {
  at::manual_seed(31);
  ToyModel model;
  const auto injected = InjectAdapters(model, DiaBlo({"q_proj", "gate_proj", "down_proj"}));
  {
    at::NoGradGuard no_grad;
    for (const auto& a : injected) a.layer->trainable_parameters()[0].normal_(0.0, 0.05);
  }
  const at::Tensor x = at::randn({3, ToyModel::kD});
  const at::Tensor trained = model.forward(x).detach();
  for (const auto& a : injected) a.layer->merge();
  EXPECT_TRUE(model.forward(x).allclose(trained, 1e-4, 1e-5));
  for (const auto& a : injected) a.layer->unmerge();
  EXPECT_TRUE(model.forward(x).allclose(trained, 1e-4, 1e-5));
}

}  // namespace
}  // namespace diablo::peft
