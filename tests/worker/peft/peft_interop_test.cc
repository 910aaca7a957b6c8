// LoRA adapters written by SaveAdapter load in Hugging Face PEFT (the test
// venv's peft, PeftModel.from_pretrained) on a model with the same module
// names, and PEFT's layers then give the outputs ours gave, to 1e-5.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "tests/worker/peft/test_util.h"
#include "tests/worker/peft/tiny_model.h"
#include "worker/peft/adapter_files.h"
#include "worker/peft/inject.h"
#include "worker/peft/tensor_io.h"

namespace diablo::peft {
namespace {

using diablo::testing::MakeTinyModel;
using diablo::testing::RandomizeAdapters;
using diablo::testing::RunPythonScript;
using diablo::testing::ScratchDir;
using diablo::testing::TinySizes;

// Writes base weights, the adapter and our layers' inputs and outputs, then
// lets peft_interop.py compare.
void CheckAgainstPeft(const AdapterConfig& config) {
  ScratchDir dir;
  TinySizes sizes;
  sizes.bias = true;
  auto model = MakeTinyModel(sizes, /*seed=*/11);
  // The base weights as PEFT must see them: before injection (PiSSA rewrites
  // the weights it wraps, and PEFT redoes that itself on load).
  std::map<std::string, at::Tensor> base;
  for (const auto& p : model->named_parameters()) base[p.key()] = p.value().detach().clone();
  SaveSafetensors(dir / "base.safetensors", base);

  InjectAdapters(*model, config);
  RandomizeAdapters(*model, /*seed=*/12);
  SaveAdapter(*model, config, dir / "adapter");

  std::map<std::string, at::Tensor> io;
  at::Generator gen = at::detail::createCPUGenerator(13);
  at::NoGradGuard no_grad;
  for (const auto& a : FindAdapters(*model)) {
    int64_t in = a.module->named_parameters(/*recurse=*/false)["weight"].size(1);
    at::Tensor x = at::randn({2, 3, in}, gen);
    io["x:" + a.path] = x;
    io["y:" + a.path] = a.layer->forward(x);
  }
  SaveSafetensors(dir / "io.safetensors", io);

  auto result =
      RunPythonScript("worker/peft/peft_interop.py",
                      {dir / "base.safetensors", dir / "adapter", dir / "io.safetensors"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

AdapterConfig LoRA(LoRAInit init) {
  AdapterConfig config;
  config.method = Method::kLoRA;
  config.rank = 4;
  config.alpha = 6;  // scaling 1.5, so a wrong scaling shows
  config.init = init;
  // Plain names and a pattern: PEFT gets one Python regex that must match
  // exactly the modules our injection chose.
  config.target_modules = {"q_proj", "v_proj", "down_proj",
                           "re:model\\.layers\\.1\\.mlp\\.up_proj"};
  return config;
}

TEST(PeftInteropTest, LoRAAdapterLoadsInPeftWithTheSameOutputs) {
  DIABLO_REQUIRE_PYTHON();
  CheckAgainstPeft(LoRA(LoRAInit::kDefault));
}

TEST(PeftInteropTest, PiSSAAdapterLoadsInPeftWhichRebuildsTheSameResidualWeights) {
  DIABLO_REQUIRE_PYTHON();
  CheckAgainstPeft(LoRA(LoRAInit::kPiSSA));
}

}  // namespace
}  // namespace diablo::peft
