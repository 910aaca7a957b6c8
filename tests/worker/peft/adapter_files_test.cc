// Adapter directories: what SaveAdapter writes (names, shapes, config fields
// PEFT expects), that LoadAdapter reproduces the adapters in a fresh model,
// and that adapters which do not fit the model are refused with a message
// naming the module and the shapes, leaving the model untouched.
#include "worker/peft/adapter_files.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "tests/worker/peft/test_util.h"
#include "tests/worker/peft/tiny_model.h"
#include "worker/peft/diablo_linear.h"
#include "worker/peft/inject.h"
#include "worker/peft/lora_linear.h"
#include "worker/peft/tensor_io.h"

namespace diablo::peft {
namespace {

using diablo::model::FormatError;
using diablo::testing::AdapterOutputs;
using diablo::testing::MakeTinyModel;
using diablo::testing::RandomizeAdapters;
using diablo::testing::ReadBytes;
using diablo::testing::ScratchDir;
using diablo::testing::TinySizes;
using ::testing::HasSubstr;

AdapterConfig DiaBloConfig(int64_t blocks = 5) {
  AdapterConfig c;
  c.method = Method::kDiaBlo;
  c.blocks = blocks;
  c.target_modules = {"q_proj", "v_proj", "down_proj"};
  c.base_model = "tiny-test-model";
  return c;
}

AdapterConfig LoRAConfig() {
  AdapterConfig c;
  c.method = Method::kLoRA;
  c.rank = 4;
  c.alpha = 8;
  c.target_modules = {"q_proj", "k_proj", "up_proj"};
  return c;
}

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// Saves a trained-looking adapter of `config` from a model built with `seed`.
void SaveTrained(const AdapterConfig& config, const std::string& dir, const TinySizes& sizes = {}) {
  auto model = MakeTinyModel(sizes, /*seed=*/1);
  InjectAdapters(*model, config);
  RandomizeAdapters(*model, /*seed=*/2);
  SaveAdapter(*model, config, dir);
}

TEST(AdapterFilesTest, DiaBloDirectoryHoldsReferenceNamesShapesAndConfig) {
  ScratchDir dir;
  SaveTrained(DiaBloConfig(), dir.path().string());

  auto file = model::SafetensorsFile::Open(dir / kAdapterWeightsFile);
  // 2 layers x 3 targets; N=5 on 16->16 gives b=4 and N_eff=4, on 24->16
  // b_in=5, b_out=4, N_eff=5 (DESIGN.md, "The method").
  ASSERT_EQ(file.tensors().size(), 6u);
  const auto* q = file.Find("model.layers.0.self_attn.q_proj.block_A");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{4, 4, 4}));
  EXPECT_EQ(q->dtype, model::SafetensorsDtype::kF32);
  const auto* down = file.Find("model.layers.1.mlp.down_proj.block_A");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->shape, (std::vector<int64_t>{5, 5, 4}));
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.metadata().at("method"), "diablo");

  auto json = nlohmann::json::parse(ReadBytes(dir / kAdapterConfigFile));
  EXPECT_EQ(json["peft_type"], "DIABLO");
  EXPECT_EQ(json["num_blocks"], 5);
  EXPECT_EQ(json["target_modules"], (std::vector<std::string>{"q_proj", "v_proj", "down_proj"}));
  EXPECT_EQ(json["base_model_name_or_path"], "tiny-test-model");
  EXPECT_TRUE(json["diablo_version"].is_string());
}

TEST(AdapterFilesTest, LoRADirectoryUsesPeftKeysAndConfigFields) {
  ScratchDir dir;
  SaveTrained(LoRAConfig(), dir.path().string());

  auto file = model::SafetensorsFile::Open(dir / kAdapterWeightsFile);
  ASSERT_EQ(file.tensors().size(), 12u);
  const auto* a = file.Find("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight");
  const auto* b = file.Find("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{4, 16}));  // [r, in]
  EXPECT_EQ(b->shape, (std::vector<int64_t>{8, 4}));   // [out, r]

  auto json = nlohmann::json::parse(ReadBytes(dir / kAdapterConfigFile));
  EXPECT_EQ(json["peft_type"], "LORA");
  EXPECT_EQ(json["task_type"], "CAUSAL_LM");
  EXPECT_EQ(json["r"], 4);
  EXPECT_TRUE(json["lora_alpha"].is_number_integer());
  EXPECT_EQ(json["lora_alpha"], 8);
  EXPECT_EQ(json["bias"], "none");
  EXPECT_EQ(json["fan_in_fan_out"], false);
  EXPECT_EQ(json["init_lora_weights"], true);
  EXPECT_EQ(json["target_modules"], (std::vector<std::string>{"q_proj", "k_proj", "up_proj"}));
  EXPECT_FALSE(json.contains("num_blocks"));
}

TEST(AdapterFilesTest, SaveThenLoadReproducesTheAdaptersInAFreshModel) {
  for (const AdapterConfig& config : {DiaBloConfig(), LoRAConfig()}) {
    SCOPED_TRACE(FineTuneMethodName(config.method));
    ScratchDir dir;
    auto trained = MakeTinyModel({}, 1);
    InjectAdapters(*trained, config);
    RandomizeAdapters(*trained, 2);
    SaveAdapter(*trained, config, dir.path().string());

    auto fresh = MakeTinyModel({}, 1);
    AdapterConfig loaded = LoadAdapter(*fresh, dir.path().string());
    EXPECT_EQ(loaded.method, config.method);
    EXPECT_EQ(loaded.target_modules, config.target_modules);

    auto want = FindAdapters(*trained), got = FindAdapters(*fresh);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i].path, want[i].path);
      auto p = want[i].layer->trainable_parameters(), q = got[i].layer->trainable_parameters();
      ASSERT_EQ(p.size(), q.size());
      for (size_t k = 0; k < p.size(); ++k) EXPECT_TRUE(at::equal(p[k], q[k])) << got[i].path;
    }
    auto y_want = AdapterOutputs(*trained, 3), y_got = AdapterOutputs(*fresh, 3);
    for (const auto& [path, y] : y_want) EXPECT_TRUE(at::allclose(y_got.at(path), y)) << path;
  }
}

TEST(AdapterFilesTest, ShapeMismatchIsRefusedNamingModuleAndShapes) {
  ScratchDir dir;
  SaveTrained(DiaBloConfig(), dir.path().string());
  TinySizes wider;
  wider.hidden = 32;
  auto other = MakeTinyModel(wider, 1);
  std::string error = ErrorOf([&] { LoadAdapter(*other, dir.path().string()); });
  // The first layer in name order: down_proj, 24 -> 32 with N = 5 gives
  // b_in = 5, b_out = 7, N_eff = 5; the file has it for 24 -> 16.
  EXPECT_THAT(error, HasSubstr("module 'model.layers.0.mlp.down_proj'"));
  EXPECT_THAT(error, HasSubstr("expected [5, 5, 7] (in=24, out=32, N=5)"));
  EXPECT_THAT(error, HasSubstr("found [5, 5, 4]"));
  EXPECT_THAT(error, HasSubstr("hint: was this adapter trained on another base model?"));

  // Same model, other block count: refused, and nothing was copied.
  auto same = MakeTinyModel({}, 1);
  InjectAdapters(*same, DiaBloConfig(/*blocks=*/2));
  error = ErrorOf([&] { LoadAdapterWeights(*same, dir.path().string()); });
  EXPECT_THAT(error, HasSubstr("N=2"));
  for (const auto& a : FindAdapters(*same)) {
    for (const at::Tensor& t : a.layer->trainable_parameters())
      EXPECT_EQ(t.abs().sum().item<float>(), 0.0f);
  }
}

TEST(AdapterFilesTest, MissingAndUnknownTensorsAreRefused) {
  ScratchDir dir;
  SaveTrained(DiaBloConfig(), dir.path().string());
  std::string weights = dir / kAdapterWeightsFile;
  auto tensors = LoadSafetensors(weights);

  auto missing = tensors;
  missing.erase("model.layers.1.mlp.down_proj.block_A");
  SaveSafetensors(weights, missing);
  auto model = MakeTinyModel({}, 1);
  EXPECT_THAT(ErrorOf([&] { LoadAdapter(*model, dir.path().string()); }),
              HasSubstr("lacks 'model.layers.1.mlp.down_proj.block_A'"));

  auto unknown = tensors;
  unknown["model.layers.0.self_attn.k_proj.block_A"] = at::zeros({4, 4, 2});
  SaveSafetensors(weights, unknown);
  model = MakeTinyModel({}, 1);
  EXPECT_THAT(ErrorOf([&] { LoadAdapter(*model, dir.path().string()); }),
              HasSubstr("'model.layers.0.self_attn.k_proj.block_A' belongs to no adapter"));

  // A LoRA file offered to DiaBlo adapters says so.
  ScratchDir lora_dir;
  SaveTrained(LoRAConfig(), lora_dir.path().string());
  model = MakeTinyModel({}, 1);
  InjectAdapters(*model, DiaBloConfig());
  EXPECT_THAT(ErrorOf([&] { LoadAdapterWeights(*model, lora_dir.path().string()); }),
              HasSubstr("the file holds LoRA tensors, the model carries DiaBlo adapters"));
}

TEST(AdapterFilesTest, NonFiniteValuesAreRefused) {
  ScratchDir dir;
  SaveTrained(DiaBloConfig(), dir.path().string());
  std::string weights = dir / kAdapterWeightsFile;
  auto tensors = LoadSafetensors(weights);
  tensors["model.layers.0.self_attn.v_proj.block_A"][0][1][1] = std::nan("");
  SaveSafetensors(weights, tensors);
  auto model = MakeTinyModel({}, 1);
  EXPECT_THAT(ErrorOf([&] { LoadAdapter(*model, dir.path().string()); }), HasSubstr("NaN"));
}

TEST(AdapterFilesTest, LoadingIntoMergedLayersKeepsThemMergedWithTheNewAdapter) {
  ScratchDir dir;
  SaveTrained(DiaBloConfig(), dir.path().string());
  auto model = MakeTinyModel({}, 1);
  auto base = MakeTinyModel({}, 1);
  InjectAdapters(*model, DiaBloConfig());
  RandomizeAdapters(*model, 9);  // some other adapter, merged into the weights
  for (const auto& a : FindAdapters(*model)) a.layer->merge();
  LoadAdapterWeights(*model, dir.path().string());

  auto reference = MakeTinyModel({}, 1);
  LoadAdapter(*reference, dir.path().string());
  auto y_want = AdapterOutputs(*reference, 4), y_got = AdapterOutputs(*model, 4);
  for (const auto& a : FindAdapters(*model)) {
    EXPECT_TRUE(a.layer->merged());
    EXPECT_TRUE(at::allclose(y_got.at(a.path), y_want.at(a.path), 1e-5, 1e-5)) << a.path;
  }
}

TEST(AdapterFilesTest, SaveRefusesAModelThatDisagreesWithTheConfig) {
  ScratchDir dir;
  auto model = MakeTinyModel({}, 1);
  EXPECT_THAT(ErrorOf([&] { SaveAdapter(*model, DiaBloConfig(), dir.path().string()); }),
              HasSubstr("no adapters"));
  InjectAdapters(*model, DiaBloConfig(5));
  EXPECT_THAT(ErrorOf([&] { SaveAdapter(*model, DiaBloConfig(8), dir.path().string()); }),
              HasSubstr("the layer has 5 blocks, the config 8"));
  EXPECT_THAT(ErrorOf([&] { SaveAdapter(*model, LoRAConfig(), dir.path().string()); }),
              HasSubstr("the layer carries diablo but the config says lora"));
  EXPECT_FALSE(std::filesystem::exists(dir / kAdapterConfigFile));
}

TEST(AdapterConfigJsonTest, RoundTripsBothMethods) {
  AdapterConfig d = DiaBloConfig(64);
  d.dropout = 0.05;
  d.target_modules = {"q_proj", "re:model\\.layers\\.[0-3]\\..*_proj"};
  AdapterConfig d2 = AdapterConfigFromJson(AdapterConfigToJson(d), "d.json");
  EXPECT_EQ(d2.method, Method::kDiaBlo);
  EXPECT_EQ(d2.blocks, 64);
  EXPECT_EQ(d2.dropout, 0.05);
  EXPECT_EQ(d2.target_modules, d.target_modules);
  EXPECT_EQ(d2.base_model, "tiny-test-model");

  AdapterConfig l = LoRAConfig();
  l.alpha = 12.5;
  l.init = LoRAInit::kPiSSA;
  AdapterConfig l2 = AdapterConfigFromJson(AdapterConfigToJson(l), "l.json");
  EXPECT_EQ(l2.method, Method::kLoRA);
  EXPECT_EQ(l2.rank, 4);
  EXPECT_EQ(l2.alpha, 12.5);
  EXPECT_EQ(l2.init, LoRAInit::kPiSSA);
  EXPECT_EQ(l2.target_modules, l.target_modules);
}

TEST(AdapterConfigJsonTest, LoRAPatternsBecomeOnePythonRegex) {
  AdapterConfig l = LoRAConfig();
  l.target_modules = {"q_proj", "re:model\\.layers\\.0\\..*"};
  auto json = nlohmann::json::parse(AdapterConfigToJson(l));
  ASSERT_TRUE(json["target_modules"].is_string());
  EXPECT_EQ(json["target_modules"], "(?:(?:.*\\.)?q_proj)|(?:model\\.layers\\.0\\..*)");
  l.target_modules = {"re:.*\\.(q|v)_proj"};
  EXPECT_EQ(AdapterConfigFromJson(AdapterConfigToJson(l), "x").target_modules, l.target_modules);
}

TEST(AdapterConfigJsonTest, ReadsPeftWrittenLoRAConfigs) {
  // Fields as peft 0.21 writes them (trimmed of the null ones).
  std::string peft = R"({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 16, "lora_alpha": 32,
    "lora_dropout": 0.1, "target_modules": ["v_proj", "self_attn.q_proj"], "bias": "none",
    "fan_in_fan_out": false, "use_dora": false, "use_rslora": false, "init_lora_weights": true,
    "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": null, "peft_version": "0.21.2",
    "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"})";
  AdapterConfig c = AdapterConfigFromJson(peft, "adapter_config.json");
  EXPECT_EQ(c.method, Method::kLoRA);
  EXPECT_EQ(c.rank, 16);
  EXPECT_EQ(c.alpha, 32);
  EXPECT_DOUBLE_EQ(c.dropout, 0.1);
  EXPECT_EQ(c.base_model, "HuggingFaceTB/SmolLM2-135M-Instruct");
  // PEFT matches "self_attn.q_proj" as a path suffix.
  EXPECT_EQ(c.target_modules,
            (std::vector<std::string>{"v_proj", "re:(?:.*\\.)?self_attn\\.q_proj"}));

  auto with = [&](const std::string& field, const nlohmann::json& value) {
    auto json = nlohmann::json::parse(peft);
    json[field] = value;
    return ErrorOf([&] { AdapterConfigFromJson(json.dump(), "adapter_config.json"); });
  };
  // rsLoRA's alpha / sqrt(r) becomes alpha' / r.
  auto rs = nlohmann::json::parse(peft);
  rs["use_rslora"] = true;
  EXPECT_DOUBLE_EQ(AdapterConfigFromJson(rs.dump(), "x").alpha, 32 * 4.0);
  EXPECT_THAT(with("use_dora", true), HasSubstr("field 'use_dora' asks for DoRA"));
  EXPECT_THAT(with("bias", "all"), HasSubstr("field 'bias'"));
  EXPECT_THAT(with("rank_pattern", {{"q_proj", 4}}), HasSubstr("per-module ranks"));
  EXPECT_THAT(with("init_lora_weights", "loftq"), HasSubstr("\"loftq\""));
  EXPECT_THAT(with("r", 0), HasSubstr("field 'r' must be a positive integer"));
  EXPECT_THAT(with("target_modules", nlohmann::json::array()), HasSubstr("field 'target_modules'"));
  EXPECT_THAT(ErrorOf([] { AdapterConfigFromJson(R"({"peft_type": "IA3"})", "a.json"); }),
              HasSubstr("\"IA3\""));
  EXPECT_THAT(ErrorOf([] { AdapterConfigFromJson(R"({"peft_type": "LORA", "r": 4})", "a.json"); }),
              HasSubstr("target_modules"));
  EXPECT_THAT(ErrorOf([] { AdapterConfigFromJson("{not json", "a.json"); }),
              HasSubstr("not valid JSON"));
  EXPECT_THAT(ErrorOf([] { ReadAdapterConfig("/nonexistent/adapter"); }), HasSubstr("cannot open"));
}

}  // namespace
}  // namespace diablo::peft
