// Import of adapters saved by the paper's reference implementation: real
// torch.save files written by the venv's PyTorch (make_reference_adapter.py)
// load with the right block count, values and outputs (checked against a
// dense block-diagonal reference computed in Python), whatever the storage
// arrangement; a pickle that would run os.system is refused, and nothing runs.
#include "worker/peft/reference_import.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <memory>

#include "formats/gguf.h"
#include "tests/worker/peft/test_util.h"
#include "tests/worker/peft/tiny_model.h"
#include "worker/peft/diablo_linear.h"
#include "worker/peft/inject.h"
#include "worker/peft/tensor_io.h"

namespace diablo::peft {
namespace {

using diablo::model::FormatError;
using diablo::testing::MakeTinyModel;
using diablo::testing::RunPythonScript;
using diablo::testing::ScratchDir;
using diablo::testing::TinySizes;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ReferenceImportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::string(DIABLO_VENV_PYTHON).empty()) return;
    dir_ = new ScratchDir;
    auto result =
        RunPythonScript("worker/peft/make_reference_adapter.py", {dir_->path().string(), Marker()});
    ASSERT_EQ(result.exit_code, 0) << result.output;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { DIABLO_REQUIRE_PYTHON(); }

  static std::string File(const std::string& name) { return *dir_ / name; }
  static std::string Marker() { return *dir_ / "marker"; }

  // The tiny model with the base weights the Python side used.
  static std::shared_ptr<torch::nn::Module> BaseModel() {
    auto model = MakeTinyModel({}, 0);
    auto base = LoadSafetensors(File("base.safetensors"));
    at::NoGradGuard no_grad;
    auto params = model->named_parameters();
    EXPECT_EQ(params.size(), base.size());
    for (auto& p : params) p.value().copy_(base.at(p.key()));
    return model;
  }

  static ScratchDir* dir_;
};
ScratchDir* ReferenceImportTest::dir_ = nullptr;

TEST_F(ReferenceImportTest, InfersBlockCountAndReproducesValuesAndOutputs) {
  auto expected = LoadSafetensors(File("expected.safetensors"));
  for (const char* file : {"adapter.chkpt", "state_dict.chkpt", "parameters.chkpt"}) {
    SCOPED_TRACE(file);
    auto model = BaseModel();
    ReferenceImport imported = ImportReferenceAdapter(*model, File(file), "tiny-reference");

    // 16 -> 16 with N = 5 has N_eff = 4, so N must come from 24 -> 16 (N_eff 5).
    EXPECT_EQ(imported.config.method, Method::kDiaBlo);
    EXPECT_EQ(imported.config.blocks, 5);
    EXPECT_THAT(imported.config.target_modules, ElementsAre("q_proj", "v_proj", "down_proj"));
    EXPECT_EQ(imported.config.base_model, "tiny-reference");
    EXPECT_EQ(imported.modules.size(), 6u);

    auto adapters = FindAdapters(*model);
    ASSERT_EQ(adapters.size(), 6u);
    at::NoGradGuard no_grad;
    for (const auto& a : adapters) {
      auto* layer = dynamic_cast<DiaBloLinearImpl*>(a.module.get());
      ASSERT_NE(layer, nullptr) << a.path;
      EXPECT_EQ(layer->requested_blocks(), 5);
      EXPECT_TRUE(at::equal(layer->block_A(), expected.at("A:" + a.path))) << a.path;
      at::Tensor y = layer->forward(expected.at("x:" + a.path));
      EXPECT_TRUE(at::allclose(y, expected.at("y:" + a.path), 1e-5, 1e-5))
          << a.path << ": max |diff| "
          << (y - expected.at("y:" + a.path)).abs().max().item<float>();
    }
  }
}

TEST_F(ReferenceImportTest, LoadsIntoAdaptersAlreadyInjected) {
  auto model = BaseModel();
  AdapterConfig config;
  config.blocks = 5;
  config.target_modules = {"q_proj", "v_proj", "down_proj"};
  InjectAdapters(*model, config);
  ImportReferenceAdapter(*model, File("adapter.chkpt"));
  auto expected = LoadSafetensors(File("expected.safetensors"));
  for (const auto& a : FindAdapters(*model)) {
    auto* layer = dynamic_cast<DiaBloLinearImpl*>(a.module.get());
    EXPECT_TRUE(at::equal(layer->block_A(), expected.at("A:" + a.path))) << a.path;
  }
}

TEST_F(ReferenceImportTest, RefusesAPickleThatWouldRunCode) {
  auto model = BaseModel();
  try {
    ImportReferenceAdapter(*model, File("evil.chkpt"));
    FAIL() << "the malicious file was accepted";
  } catch (const FormatError& e) {
    EXPECT_THAT(e.what(), HasSubstr("forbidden global 'posix.system'"));
  }
  EXPECT_FALSE(std::filesystem::exists(Marker())) << "the pickle's command ran";
  EXPECT_TRUE(FindAdapters(*model).empty()) << "the model was changed";
}

TEST_F(ReferenceImportTest, RefusesAnAdapterForAnotherModel) {
  TinySizes wider;
  wider.hidden = 32;
  auto model = MakeTinyModel(wider, 0);
  try {
    ImportReferenceAdapter(*model, File("adapter.chkpt"));
    FAIL() << "an adapter for another model was accepted";
  } catch (const FormatError& e) {
    EXPECT_THAT(e.what(), HasSubstr("module 'model.layers.0.self_attn.q_proj'"));
    EXPECT_THAT(e.what(), HasSubstr("hint: was this adapter trained on another base model?"));
  }
  EXPECT_TRUE(FindAdapters(*model).empty());
}

}  // namespace
}  // namespace diablo::peft
