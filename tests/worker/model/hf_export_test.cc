// Writing Hugging Face model directories, without Python: shard plans,
// config.json written and read back as the same model, Llama 3 rope scaling
// recovered from rotary frequencies (how GGUF files carry it), the staged
// directory's all-or-nothing rename, and the weights written under HF names
// and read back by our own loader unchanged.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "formats/staged_directory.h"
#include "tests/worker/peft/merge_test_util.h"
#include "worker/model/hf_config_json.h"
#include "worker/model/load_model.h"

namespace diablo::model {
namespace {

using diablo::testing::Entries;
using diablo::testing::ScratchDir;
using diablo::testing::TinyConfig;

TEST(PlanShards, StartsANewShardWhenTheNextTensorWouldNotFit) {
  EXPECT_EQ(PlanShards({40, 40, 40, 40}, 100), (std::vector<int>{0, 0, 1, 1}));
  EXPECT_EQ(PlanShards({40, 60, 1}, 100), (std::vector<int>{0, 0, 1}));
  // A tensor larger than the limit gets a shard of its own.
  EXPECT_EQ(PlanShards({10, 500, 10}, 100), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(PlanShards({}, 100), (std::vector<int>{}));
}

LlamaConfig RoundTrip(const LlamaConfig& c) {
  return ConfigFromHfJson(nlohmann::json::parse(HfConfigJson(c).dump()), "written");
}

TEST(HfConfigJson, ReadsBackAsTheSameModelForEachFamily) {
  LlamaConfig llama = TinyConfig();
  llama.qkv_bias = llama.o_bias = llama.mlp_bias = true;
  llama.tie_word_embeddings = true;
  llama.rope_theta = 500000;
  llama.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
  LlamaConfig qwen2 = TinyConfig();
  qwen2.architecture = "Qwen2ForCausalLM";
  qwen2.qkv_bias = true;
  LlamaConfig mistral = TinyConfig();
  mistral.architecture = "MistralForCausalLM";
  mistral.head_dim = 32;  // not hidden / heads: must be written out
  for (const LlamaConfig& c : {llama, qwen2, mistral}) {
    SCOPED_TRACE(c.architecture);
    const LlamaConfig back = RoundTrip(c);
    EXPECT_EQ(back.architecture, c.architecture);
    EXPECT_EQ(back.vocab_size, c.vocab_size);
    EXPECT_EQ(back.hidden_size, c.hidden_size);
    EXPECT_EQ(back.intermediate_size, c.intermediate_size);
    EXPECT_EQ(back.num_hidden_layers, c.num_hidden_layers);
    EXPECT_EQ(back.num_attention_heads, c.num_attention_heads);
    EXPECT_EQ(back.num_key_value_heads, c.num_key_value_heads);
    EXPECT_EQ(back.head_dim, c.head_dim);
    EXPECT_EQ(back.max_position_embeddings, c.max_position_embeddings);
    EXPECT_DOUBLE_EQ(back.rms_norm_eps, c.rms_norm_eps);
    EXPECT_DOUBLE_EQ(back.rope_theta, c.rope_theta);
    EXPECT_EQ(back.rope_scaling.type, c.rope_scaling.type);
    EXPECT_DOUBLE_EQ(back.rope_scaling.factor, c.rope_scaling.factor);
    EXPECT_EQ(back.rope_scaling.original_max_position_embeddings,
              c.rope_scaling.original_max_position_embeddings);
    EXPECT_EQ(back.tie_word_embeddings, c.tie_word_embeddings);
    EXPECT_EQ(back.qkv_bias, c.qkv_bias);
    EXPECT_EQ(back.o_bias, c.o_bias);
    EXPECT_EQ(back.mlp_bias, c.mlp_bias);
    EXPECT_EQ(back.bos_token_id, c.bos_token_id);
    EXPECT_EQ(back.eos_token_id, c.eos_token_id);
    EXPECT_EQ(back.torch_dtype, c.torch_dtype);
  }
}

TEST(HfConfigJson, WritesFloat32ValuesAsTheirShortestDecimal) {
  LlamaConfig c = TinyConfig();
  c.rms_norm_eps = static_cast<float>(1e-5);  // as a GGUF file stores it
  EXPECT_EQ(HfConfigJson(c)["rms_norm_eps"].dump(), "1e-05");
}

TEST(HfConfigJson, RefusesModelsItsFamilyCannotDescribe) {
  LlamaConfig llama = TinyConfig();
  llama.qkv_bias = true;  // without o_proj bias: attention_bias covers all four
  EXPECT_THROW(HfConfigJson(llama), std::invalid_argument);
  LlamaConfig mistral = TinyConfig();
  mistral.architecture = "MistralForCausalLM";
  mistral.mlp_bias = true;
  EXPECT_THROW(HfConfigJson(mistral), std::invalid_argument);
}

// Llama 3.1's scaling as a GGUF file has it: frequencies already divided,
// the config without rope_scaling.
TEST(RopeScalingForFrequencies, RecoversLlama3ScalingFromTheFrequencies) {
  for (int64_t old_context : {8192, 32}) {
    SCOPED_TRACE(old_context);
    LlamaConfig scaled = TinyConfig();
    scaled.head_dim = 64;
    scaled.rope_theta = 500000;
    scaled.rope_scaling = {"llama3", 8.0, 1.0, 4.0, old_context};
    const at::Tensor frequencies = RotaryInverseFrequencies(scaled);
    LlamaConfig plain = scaled;
    plain.rope_scaling = {};
    const RopeScaling found = RopeScalingForFrequencies(plain, frequencies);
    EXPECT_EQ(found.type, "llama3");
    EXPECT_DOUBLE_EQ(found.factor, 8.0);
    if (old_context == 8192) {  // the usual bounds come back exactly
      EXPECT_DOUBLE_EQ(found.low_freq_factor, 1.0);
      EXPECT_DOUBLE_EQ(found.high_freq_factor, 4.0);
    }
    plain.rope_scaling = found;
    EXPECT_TRUE(at::allclose(RotaryInverseFrequencies(plain), frequencies, 1e-5, 0));
  }
}

TEST(RopeScalingForFrequencies, KeepsTheConfigWhenFrequenciesMatchAndRefusesOtherScalings) {
  LlamaConfig c = TinyConfig();
  EXPECT_TRUE(RopeScalingForFrequencies(c, RotaryInverseFrequencies(c)).type.empty());
  // Linear scaling (every frequency halved) is not what Llama 3 does.
  EXPECT_THROW(RopeScalingForFrequencies(c, RotaryInverseFrequencies(c) / 2),
               std::invalid_argument);
}

TEST(StagedDirectory, AppearsOnlyOnCommitAndLeavesNothingOnFailure) {
  ScratchDir dir;
  {
    StagedDirectory staged(dir / "out", /*replace=*/false);
    std::ofstream(staged.path() + "/file") << "x";
    EXPECT_FALSE(std::filesystem::exists(dir / "out"));
  }  // destroyed without Commit: a failed write
  EXPECT_TRUE(Entries(dir.path()).empty());
  {
    StagedDirectory staged(dir / "out", false);
    std::ofstream(staged.path() + "/file") << "x";
    staged.Commit();
  }
  EXPECT_EQ(Entries(dir.path()), std::vector<std::string>{"out"});
  EXPECT_EQ(Entries(dir.path() / "out"), std::vector<std::string>{"file"});
}

TEST(StagedDirectory, RefusesANonEmptyTargetUnlessReplacing) {
  ScratchDir dir;
  std::filesystem::create_directories(dir.path() / "out");
  std::ofstream(dir / "out/old") << "old";
  EXPECT_THROW(StagedDirectory(dir / "out", false), std::runtime_error);
  std::ofstream(dir / "file") << "x";
  EXPECT_THROW(StagedDirectory::CheckTarget(dir / "file", true), std::runtime_error);
  EXPECT_THROW(StagedDirectory::CheckTarget(dir / "file/out", false), std::runtime_error);
  {  // missing parents are created, as save_pretrained does
    StagedDirectory staged(dir / "missing/parents/out", false);
    staged.Commit();
    EXPECT_TRUE(std::filesystem::is_directory(dir.path() / "missing/parents/out"));
    std::filesystem::remove_all(dir.path() / "missing");
  }
  {
    StagedDirectory staged(dir / "out", /*replace=*/true);
    std::ofstream(staged.path() + "/new") << "new";
    staged.Commit();
  }
  EXPECT_EQ(Entries(dir.path() / "out"), std::vector<std::string>{"new"});
  EXPECT_EQ(Entries(dir.path()), (std::vector<std::string>{"file", "out"}));
  // An existing empty directory is simply filled.
  std::filesystem::create_directories(dir.path() / "empty");
  StagedDirectory staged(dir / "empty/", false);
  staged.Commit();
  EXPECT_TRUE(std::filesystem::is_directory(dir.path() / "empty"));
}

TEST(SaveHfDirectory, WeightsReadBackUnderHfNamesShardedOrNot) {
  LlamaConfig config = TinyConfig();
  config.tie_word_embeddings = true;
  LlamaForCausalLM model = diablo::testing::RandomModel(config, 3);
  ScratchDir dir;
  for (uint64_t shard : {uint64_t{5'000'000'000}, uint64_t{30'000}}) {
    SCOPED_TRACE(shard);
    const std::string out = dir / ("out" + std::to_string(shard));
    SaveHfOptions options;
    options.max_shard_bytes = shard;
    SaveHfDirectory(*model, out, {{"config.json", HfConfigForModel(*model, at::kFloat)}}, options);
    const auto files = Entries(out);
    const bool sharded = shard < 1'000'000;
    EXPECT_EQ(std::count(files.begin(), files.end(), "model.safetensors.index.json"), sharded);
    EXPECT_EQ(std::count(files.begin(), files.end(), "model.safetensors"), !sharded);
    if (sharded) {
      EXPECT_GT(files.size(), 3u);
      EXPECT_EQ(files[1], "model-00001-of-" + files[1].substr(15, 5) + ".safetensors");
    }
    LoadedModel back = LoadModel(out);
    const auto expected = model->named_parameters();
    const auto got = back.model->named_parameters();
    ASSERT_EQ(got.size(), expected.size());
    for (const auto& p : expected) {
      EXPECT_TRUE(at::equal(got[p.key()], p.value())) << p.key();
    }
  }
}

}  // namespace
}  // namespace diablo::model
