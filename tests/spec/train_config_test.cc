// The training config: defaults, YAML and JSON, --set overrides, and errors
// that name the field.
#include "spec/train_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace diablo::train {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

json Minimal() {
  return {{"model", "m.gguf"}, {"data", {{"train", "t.jsonl"}}}, {"output_dir", "out"}};
}

std::string ErrorOf(const json& doc) {
  try {
    ConfigFromJson(doc, "job.yaml");
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(TrainConfig, DefaultsAreDiaBloOnEveryProjection) {
  TrainConfig c = ConfigFromJson(Minimal(), "job.yaml");
  EXPECT_EQ(c.method.name, TrainMethod::kDiaBlo);
  EXPECT_EQ(c.method.blocks, 64);
  EXPECT_EQ(c.method.target_modules,
            (std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                      "up_proj", "down_proj"}));
  EXPECT_EQ(c.precision, Precision::kFp32);
  EXPECT_EQ(ToAdapterConfig(c).blocks, 64);
}

TEST(TrainConfig, ErrorsNameTheFieldAndTheProblem) {
  json doc = Minimal();
  doc["optim"] = {{"lr", "fast"}};
  EXPECT_EQ(ErrorOf(doc), "job.yaml: optim.lr: must be a number, got string \"fast\"");
  doc["optim"] = {{"learning_rate", 1e-4}};
  EXPECT_THAT(ErrorOf(doc), HasSubstr("optim.learning_rate: unknown key (known keys here:"));
  doc["optim"] = {{"global_batch", 0}};
  EXPECT_THAT(ErrorOf(doc), HasSubstr("optim.global_batch: must be >= 1, got 0"));
  doc["optim"] = {{"global_batch", 4}, {"micro_batch", 8}};
  EXPECT_THAT(ErrorOf(doc), HasSubstr("optim.micro_batch: is larger than optim.global_batch"));
  doc["optim"] = json::object();
  doc["method"] = {{"name", "dora"}};
  EXPECT_THAT(ErrorOf(doc),
              HasSubstr("method.name: must be one of diablo, lora, full, got \"dora\""));
  doc["method"] = {{"dropout", 1.5}};
  EXPECT_THAT(ErrorOf(doc), HasSubstr("method.dropout: must be in [0, 0.999]"));
  doc.erase("method");
  doc.erase("model");
  EXPECT_THAT(ErrorOf(doc), HasSubstr("model: is required"));
  EXPECT_THAT(ErrorOf(json::array()), HasSubstr("(top level): must be a mapping"));
}

// Found by fuzz.job_spec: a float integer outside int64 reached a
// conversion that is undefined for it.
TEST(TrainConfig, IntegersBeyondInt64AreRefusedNotConverted) {
  json doc = Minimal();
  for (const json& value : {json(8e82), json(-8e82), json(9.3e18), json(18446744073709551615u)}) {
    SCOPED_TRACE(value.dump());
    doc["method"] = {{"name", "lora"}, {"rank", value}};
    EXPECT_THAT(ErrorOf(doc), HasSubstr("method.rank: must be an integer"));
  }
  doc["method"] = {{"name", "lora"}, {"rank", 16.0}};
  EXPECT_EQ(ErrorOf(doc), "") << "a whole float is an integer";
}

TEST(TrainConfig, PackedBaseWeightsNeedAnAdapterMethodAndAGgufFile) {
  json doc = Minimal();
  EXPECT_EQ(ConfigFromJson(doc, "job.yaml").base_weights, BaseWeights::kDense);
  doc["base_weights"] = "packed";
  EXPECT_EQ(ConfigFromJson(doc, "job.yaml").base_weights, BaseWeights::kPacked);
  EXPECT_EQ(ConfigToJson(ConfigFromJson(doc, "job.yaml"))["base_weights"], "packed");
  doc["method"]["name"] = "full";
  EXPECT_THAT(ErrorOf(doc), HasSubstr("base_weights: packed needs method diablo or lora"));
  doc["method"]["name"] = "lora";
  EXPECT_EQ(ConfigFromJson(doc, "job.yaml").method.name, TrainMethod::kLoRA);
  doc["method"]["init"] = "pissa";
  EXPECT_THAT(ErrorOf(doc), HasSubstr("base_weights: packed needs LoRA init default"));
  doc["method"] = json::object();
  doc["model"] = "models/smollm2";
  EXPECT_THAT(ErrorOf(doc), HasSubstr("base_weights: packed needs a .gguf model"));
  doc["base_weights"] = "q4";
  EXPECT_THAT(ErrorOf(doc), HasSubstr("base_weights: must be one of dense, packed"));
}

TEST(TrainConfig, ReadsYamlAndAppliesOverrides) {
  auto dir =
      std::filesystem::temp_directory_path() / ("diablo-config-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = (dir / "job.yaml").string();
  std::ofstream(path) << "model: m.gguf\n"
                         "method:\n  name: lora\n  rank: 16\n  target_modules: [q_proj, v_proj]\n"
                         "data:\n  train: t.jsonl\n  template: 'chatml'\n"
                         "optim:\n  lr: 3e-4\n  betas: [0.9, 0.95]\n"
                         "output_dir: out\n";
  TrainConfig c = LoadTrainConfig(path, {"optim.lr=1e-3", "method.rank=4", "data.packing=true"});
  EXPECT_EQ(c.method.name, TrainMethod::kLoRA);
  EXPECT_EQ(c.method.rank, 4);
  EXPECT_DOUBLE_EQ(c.optim.lr, 1e-3);
  EXPECT_DOUBLE_EQ(c.optim.beta2, 0.95);
  EXPECT_TRUE(c.data.packing);
  EXPECT_EQ(c.method.target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_THROW(LoadTrainConfig(path, {"optim"}), std::invalid_argument);
  EXPECT_THROW(LoadTrainConfig(path, {"model.name=x"}),
               std::invalid_argument);  // model is a string

  std::ofstream(path) << "model: [unclosed\n";
  try {
    LoadTrainConfig(path, {});
    FAIL() << "expected a YAML error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("job.yaml:"));
    EXPECT_THAT(e.what(), HasSubstr("not valid YAML"));
  }
  std::filesystem::remove_all(dir);
}

TEST(TrainConfig, RoundTripsThroughItsJson) {
  json doc = Minimal();
  doc["optim"] = {{"lr", 2e-4}, {"scheduler", "cosine"}, {"warmup_ratio", 0.1}};
  doc["precision"] = "bf16";
  TrainConfig c = ConfigFromJson(doc, "a");
  TrainConfig again = ConfigFromJson(ConfigToJson(c), "b");
  EXPECT_EQ(ConfigToJson(again), ConfigToJson(c));
  EXPECT_EQ(again.precision, Precision::kBf16);
  EXPECT_EQ(again.optim.scheduler, Schedule::kCosine);
}

}  // namespace
}  // namespace diablo::train
