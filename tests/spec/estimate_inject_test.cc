// The estimator (spec/estimate.h, config only) against what injection
// really produces: the module tree of the real LlamaForCausalLM and of the
// tiny test model, with sizes that no block count divides evenly, counted by
// peft::CountTrainableParameters and by summing the model's tensors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "spec/adapter_config.h"
#include "spec/estimate.h"
#include "spec/model_shape.h"
#include "tests/worker/peft/tiny_model.h"
#include "worker/model/llama.h"
#include "worker/peft/inject.h"

namespace diablo {
namespace {

// hidden 30 = 3 heads of 10, one KV head (k/v: 30 -> 10), MLP 44, untied
// embeddings, q/k/v biases: every projection shape differs and 30, 10 and 44
// share no block count but 1 and 2.
model::LlamaConfig AwkwardConfig() {
  model::LlamaConfig c;
  c.vocab_size = 50;
  c.hidden_size = 30;
  c.intermediate_size = 44;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 3;
  c.num_key_value_heads = 1;
  c.head_dim = 10;
  c.qkv_bias = true;
  c.tie_word_embeddings = false;
  return c;
}

int64_t ModelParameters(torch::nn::Module& module) {
  int64_t count = 0;
  for (const at::Tensor& p : module.parameters()) count += p.numel();
  return count;
}

const std::vector<std::vector<std::string>> kTargetSets = {
    {"q_proj", "k_proj", "v_proj", "up_proj", "down_proj"},
    {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    {"re:model\\.layers\\.1\\..*_proj", "lm_head"},
};

TEST(EstimateVsInjection, ModuleTreeAndTotalMatchTheRealModel) {
  const model::LlamaConfig config = AwkwardConfig();
  model::LlamaForCausalLM model(config);
  std::vector<std::string> real_paths, estimated_paths;
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    real_paths.push_back(item.key());
  }
  for (const auto& m : estimate::LlamaModules(config)) estimated_paths.push_back(m.path);
  EXPECT_EQ(estimated_paths, real_paths);
  EXPECT_EQ(estimate::EstimateTraining(config, {}).total_parameters, ModelParameters(*model));

  model::LlamaConfig tied = config;
  tied.tie_word_embeddings = true;
  model::LlamaForCausalLM tied_model(tied);
  EXPECT_EQ(estimate::EstimateTraining(tied, {}).total_parameters, ModelParameters(*tied_model));
}

TEST(EstimateVsInjection, DiaBloCountsEqualInjectedAdaptersOnTheRealModel) {
  const model::LlamaConfig config = AwkwardConfig();
  for (const auto& targets : kTargetSets) {
    for (int64_t blocks : {1, 3, 4, 7, 16, 64}) {
      model::LlamaForCausalLM model(config);
      peft::AdapterConfig adapter;
      adapter.method = peft::Method::kDiaBlo;
      adapter.blocks = blocks;
      adapter.target_modules = targets;
      peft::InjectAdapters(*model, adapter);

      estimate::EstimateOptions options;
      options.method = estimate::Method::kDiaBlo;
      options.blocks = blocks;
      options.target_modules = targets;
      EXPECT_EQ(estimate::EstimateTraining(config, options).trainable_parameters,
                peft::CountTrainableParameters(*model))
          << "blocks " << blocks << ", targets " << targets[0];
    }
  }
}

TEST(EstimateVsInjection, LoRACountsEqualInjectedAdaptersOnTheRealModel) {
  const model::LlamaConfig config = AwkwardConfig();
  for (const auto& targets : kTargetSets) {
    for (int64_t rank : {1, 3, 8}) {
      model::LlamaForCausalLM model(config);
      peft::AdapterConfig adapter;
      adapter.method = peft::Method::kLoRA;
      adapter.rank = rank;
      adapter.target_modules = targets;
      peft::InjectAdapters(*model, adapter);

      estimate::EstimateOptions options;
      options.method = estimate::Method::kLoRA;
      options.rank = rank;
      options.target_modules = targets;
      EXPECT_EQ(estimate::EstimateTraining(config, options).trainable_parameters,
                peft::CountTrainableParameters(*model))
          << "rank " << rank << ", targets " << targets[0];
    }
  }
}

TEST(EstimateVsInjection, CountsEqualInjectionOnTheTinyTestModel) {
  // tests/worker/peft/tiny_model.h with sizes that do not divide: q/o 30 -> 30,
  // k/v 30 -> 10 (three heads of 10, one KV head), MLP 44, biases on q/k/v.
  testing::TinySizes sizes;
  sizes.hidden = 30;
  sizes.kv = 10;
  sizes.mlp = 44;
  sizes.layers = 3;
  sizes.bias = true;
  model::LlamaConfig config = AwkwardConfig();
  config.num_hidden_layers = sizes.layers;
  for (peft::Method method : {peft::Method::kDiaBlo, peft::Method::kLoRA}) {
    for (int64_t n : {2, 5, 9, 13}) {
      auto tiny = testing::MakeTinyModel(sizes, /*seed=*/n);
      peft::AdapterConfig adapter;
      adapter.method = method;
      adapter.blocks = n;
      adapter.rank = n;
      peft::InjectAdapters(*tiny, adapter);  // default targets: every projection

      estimate::EstimateOptions options;
      options.method = method;
      options.blocks = n;
      options.rank = n;
      EXPECT_EQ(estimate::EstimateTraining(config, options).trainable_parameters,
                peft::CountTrainableParameters(*tiny))
          << FineTuneMethodName(method) << " " << n;
    }
  }
}

TEST(EstimateVsInjection, DefaultTargetsAreTheAdapterConfigDefaults) {
  EXPECT_EQ(estimate::EstimateOptions{}.target_modules, peft::AdapterConfig{}.target_modules);
  EXPECT_EQ(estimate::EstimateOptions{}.blocks, peft::AdapterConfig{}.blocks);
  EXPECT_EQ(estimate::EstimateOptions{}.rank, peft::AdapterConfig{}.rank);
}

TEST(EstimateVsInjection, BothRejectTheSameTargets) {
  const model::LlamaConfig config = AwkwardConfig();
  for (const std::vector<std::string>& targets :
       std::vector<std::vector<std::string>>{{"qkv_proj"}, {"mlp"}, {"embed_tokens"}, {"re:["}}) {
    model::LlamaForCausalLM model(config);
    peft::AdapterConfig adapter;
    adapter.target_modules = targets;
    EXPECT_THROW(peft::InjectAdapters(*model, adapter), std::invalid_argument) << targets[0];
    estimate::EstimateOptions options;
    options.target_modules = targets;
    EXPECT_THROW(estimate::EstimateTraining(config, options), std::invalid_argument) << targets[0];
  }
}

}  // namespace
}  // namespace diablo
