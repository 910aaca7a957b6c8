// The estimator's counts against the paper and against the closed-form
// formulas, its errors, and the memory model's documented behaviour.
#include "spec/estimate.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "spec/model_source.h"

namespace diablo::estimate {
namespace {

using ::testing::HasSubstr;

// Llama-2-7B's config.json as published (meta-llama/Llama-2-7b-hf).
constexpr const char* kLlama2_7B = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
  "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
  "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "tie_word_embeddings": false,
  "torch_dtype": "float16", "bos_token_id": 1, "eos_token_id": 2
})";

class ConfigFile {
 public:
  explicit ConfigFile(const std::string& text) {
    std::string pattern = (std::filesystem::temp_directory_path() / "diablo-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    std::ofstream(dir_ / "config.json") << text;
  }
  ~ConfigFile() { std::filesystem::remove_all(dir_); }
  std::string dir() const { return dir_.string(); }
  std::string file() const { return (dir_ / "config.json").string(); }

 private:
  std::filesystem::path dir_;
};

model::LlamaConfig Llama2_7B() {
  ConfigFile file(kLlama2_7B);
  return ReadModelSource(file.file()).config;
}

EstimateOptions PaperDiaBlo() {
  EstimateOptions o;
  o.method = Method::kDiaBlo;
  o.blocks = 64;
  o.target_modules = {"q_proj", "k_proj", "v_proj", "up_proj", "down_proj"};
  return o;
}

TEST(Estimate, Llama2_7B_With64BlocksMatchesThePaper) {
  const Estimate e = EstimateTraining(Llama2_7B(), PaperDiaBlo());
  EXPECT_EQ(e.total_parameters, 6'738'415'616);
  EXPECT_EQ(e.trainable_parameters, 70'254'592);
  EXPECT_NEAR(e.trainable_percent, 1.0426, 5e-5);
  // q,k,v: 64 blocks of 64x64; up/down: 64 blocks of 64x172 (11008 / 64).
  ASSERT_EQ(e.targets.size(), 5u);
  const std::vector<std::pair<std::string, int64_t>> expected = {{"q_proj", 32 * 64 * 64 * 64},
                                                                 {"k_proj", 32 * 64 * 64 * 64},
                                                                 {"v_proj", 32 * 64 * 64 * 64},
                                                                 {"up_proj", 32 * 64 * 64 * 172},
                                                                 {"down_proj", 32 * 64 * 172 * 64}};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(e.targets[i].module, expected[i].first);
    EXPECT_EQ(e.targets[i].layers, 32);
    EXPECT_EQ(e.targets[i].parameters, expected[i].second) << expected[i].first;
  }
}

TEST(Estimate, ReadsAModelDirectoryLikeItsConfigJson) {
  ConfigFile file(kLlama2_7B);
  EXPECT_EQ(ReadModelSource(file.dir()).config.hidden_size, 4096);
  EXPECT_EQ(ReadModelSource(file.dir()).format, "hf");
}

TEST(Estimate, LoRAFollowsRankTimesInPlusOut) {
  EstimateOptions o;
  o.method = Method::kLoRA;
  o.rank = 16;
  o.target_modules = {"q_proj", "v_proj", "down_proj"};
  const Estimate e = EstimateTraining(Llama2_7B(), o);
  EXPECT_EQ(e.trainable_parameters, 32 * 16 * ((4096 + 4096) * 2 + (11008 + 4096)));
}

TEST(Estimate, DiaBloEffectiveBlocksCanBeFewerThanRequested) {
  // hidden 10 with N = 6: b = 2, N_eff = ceil(10 / 2) = 5, so 5 * 2 * 2 = 20
  // per square projection, not 6 * 2 * 2.
  model::LlamaConfig c;
  c.vocab_size = 7;
  c.hidden_size = 10;
  c.intermediate_size = 14;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 1;
  c.num_key_value_heads = 1;
  c.head_dim = 10;
  EstimateOptions o;
  o.blocks = 6;
  o.target_modules = {"q_proj", "gate_proj"};
  const Estimate e = EstimateTraining(c, o);
  // gate 10 -> 14: b_in 2, b_out 3, N_eff = max(5, 5) = 5 -> 5 * 2 * 3 = 30.
  EXPECT_EQ(e.trainable_parameters, 3 * (20 + 30));
}

TEST(Estimate, FullCountsEveryParameterAndTiedEmbeddingsOnce) {
  model::LlamaConfig c = Llama2_7B();
  EstimateOptions o;
  o.method = Method::kFull;
  Estimate e = EstimateTraining(c, o);
  EXPECT_EQ(e.trainable_parameters, e.total_parameters);
  EXPECT_DOUBLE_EQ(e.trainable_percent, 100.0);
  EXPECT_EQ(e.memory.frozen_weights, 0u);
  c.tie_word_embeddings = true;
  EXPECT_EQ(EstimateTraining(c, o).total_parameters, 6'738'415'616 - 32000 * 4096);
}

TEST(Estimate, RegexTargetsMatchTheWholeDottedPath) {
  EstimateOptions o = PaperDiaBlo();
  o.target_modules = {"re:model\\.layers\\.[0-3]\\.self_attn\\.(q|v)_proj"};
  const Estimate e = EstimateTraining(Llama2_7B(), o);
  EXPECT_EQ(e.trainable_parameters, 4 * 2 * 64 * 64 * 64);
  ASSERT_EQ(e.targets.size(), 2u);
  EXPECT_EQ(e.targets[0].layers, 4);
}

TEST(Estimate, BiasesCountInTheModelButNotInAdapters) {
  model::LlamaConfig c = Llama2_7B();
  c.qkv_bias = true;
  const Estimate e = EstimateTraining(c, PaperDiaBlo());
  EXPECT_EQ(e.total_parameters, 6'738'415'616 + 32 * 3 * 4096);
  EXPECT_EQ(e.trainable_parameters, 70'254'592);
}

TEST(Estimate, ErrorsNameTheProblem) {
  const model::LlamaConfig c = Llama2_7B();
  auto message = [&](EstimateOptions o) {
    try {
      EstimateTraining(c, o);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EstimateOptions o = PaperDiaBlo();
  o.target_modules = {"q_proj", "qkv_proj"};
  EXPECT_THAT(message(o), HasSubstr("'qkv_proj' matches no module"));
  EXPECT_THAT(message(o), HasSubstr("q_proj, k_proj, v_proj, o_proj, gate_proj"));
  o.target_modules = {"mlp"};
  EXPECT_THAT(message(o), HasSubstr("'model.layers.0.mlp' matches the targets but is a container"));
  o.target_modules = {"embed_tokens"};
  EXPECT_THAT(message(o), HasSubstr("is an embedding, not a linear layer"));
  o.target_modules = {"re:("};
  EXPECT_THAT(message(o), HasSubstr("'re:(' is not a valid regular expression"));
  o = PaperDiaBlo();
  o.blocks = 0;
  EXPECT_THAT(message(o), HasSubstr("blocks must be a positive"));
  o = PaperDiaBlo();
  o.base_weights = BaseWeights::kPacked;
  EXPECT_THAT(message(o), HasSubstr("need a GGUF model"));
  o = PaperDiaBlo();
  o.label_tokens = 4096;
  o.seq_len = 2048;
  EXPECT_THAT(message(o), HasSubstr("label_tokens must be between 0"));
  EXPECT_THROW(ParseFineTuneMethod("dora"), std::invalid_argument);
  EXPECT_EQ(ParsePrecision("bf16"), Precision::kBf16);
  EXPECT_EQ(ParsePrecision("bfloat16"), Precision::kBf16);
  EXPECT_THROW(ParsePrecision("gguf"), std::invalid_argument);
}

TEST(Estimate, ModelSourceErrorsNameThePath) {
  EXPECT_THAT(
      [] {
        try {
          ReadModelSource("/nonexistent/model.gguf");
        } catch (const std::invalid_argument& e) {
          return std::string(e.what());
        }
        return std::string();
      }(),
      HasSubstr("/nonexistent/model.gguf: no such file or directory"));
  ConfigFile bad(R"({"hidden_size": 64})");
  EXPECT_THROW(ReadModelSource(bad.file()), std::invalid_argument);
}

// The scheduler reads a tenant's config.json at submit: 200,000 nested
// arrays (which a recursive copy or walk would follow down the stack) are
// refused while parsing.
TEST(Estimate, AConfigNestedBeyondReasonIsRefusedWhileParsing) {
  ConfigFile deep("{\"hidden_size\": " + std::string(200000, '[') + std::string(200000, ']') + "}");
  try {
    ReadModelSource(deep.file());
    FAIL() << "a config nested 200,000 deep was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("config.json: nested deeper than 100 levels"));
  }
}

TEST(EstimateMemory, OptimizerStateIsTwiceAndGradientsOnceTheFp32Adapter) {
  const Estimate e = EstimateTraining(Llama2_7B(), PaperDiaBlo());
  EXPECT_EQ(e.memory.trainable, 4u * 70'254'592);
  EXPECT_EQ(e.memory.gradients, 4u * 70'254'592);
  EXPECT_EQ(e.memory.optimizer, 8u * 70'254'592);
  EXPECT_EQ(e.memory.total, e.memory.frozen_weights + e.memory.trainable + e.memory.gradients +
                                e.memory.optimizer + e.memory.activations);
}

TEST(EstimateMemory, FrozenWeightsFollowThePrecisionWithNormsInFp32) {
  EstimateOptions o = PaperDiaBlo();
  const uint64_t norms = 4096 * (2 * 32 + 1);
  const uint64_t others = 6'738'415'616 - norms;
  EXPECT_EQ(EstimateTraining(Llama2_7B(), o).memory.frozen_weights, 4 * (others + norms));
  o.precision = Precision::kBf16;
  EXPECT_EQ(EstimateTraining(Llama2_7B(), o).memory.frozen_weights, 2 * others + 4 * norms);
  o.base_weights = BaseWeights::kPacked;
  o.stored_weight_bytes = 3'825'000'000;
  EXPECT_EQ(EstimateTraining(Llama2_7B(), o).memory.frozen_weights, 3'825'000'000u);
}

TEST(EstimateMemory, ActivationsFollowTheDocumentedFormula) {
  EstimateOptions o = PaperDiaBlo();
  o.precision = Precision::kBf16;
  o.micro_batch = 2;
  o.seq_len = 512;
  const uint64_t t = 1024, h = 4096, m = 11008, v = 32000, a = 2;
  const uint64_t per_layer = t * a * (4 * h + 2 * h + 2 * h + 4 * m);
  const uint64_t head = t * h * a + t * h * a + t * v * 8;
  EXPECT_EQ(EstimateTraining(Llama2_7B(), o).memory.activations, 32 * per_layer + head);

  o.gradient_checkpointing = true;
  EXPECT_EQ(EstimateTraining(Llama2_7B(), o).memory.activations, 32 * t * h * a + per_layer + head);

  // Logits only where there are labels: 100 of the 1024 positions.
  o.label_tokens = 100;
  EXPECT_EQ(EstimateTraining(Llama2_7B(), o).memory.activations,
            32 * t * h * a + per_layer + t * h * a + 100 * h * a + 100 * v * 8);
}

TEST(EstimateMemory, ActivationsGrowLinearlyWithTokens) {
  EstimateOptions o = PaperDiaBlo();
  o.seq_len = 1024;
  const uint64_t one = EstimateTraining(Llama2_7B(), o).memory.activations;
  o.micro_batch = 4;
  EXPECT_EQ(EstimateTraining(Llama2_7B(), o).memory.activations, 4 * one);
}

}  // namespace
}  // namespace diablo::estimate
