// The real SmolLM2 GGUF merged with a small random DiaBlo adapter: the
// directory `diablo merge` writes loads in transformers (config, weights and
// the exported tokenizer), AutoTokenizer gives our ids on
// tests/worker/model/prompts.txt, and the merged model's logits are ours with the
// adapter running unmerged.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/worker/peft/merge_test_util.h"
#include "text/tokenizer.h"
#include "worker/model/load_model.h"
#include "worker/peft/adapter_files.h"
#include "worker/peft/adapter_layer.h"
#include "worker/peft/inject.h"

namespace diablo::model {
namespace {

using diablo::testing::ReadBytes;
using diablo::testing::RunCommand;
using diablo::testing::ScratchDir;
using nlohmann::json;

std::vector<std::string> Prompts() {
  std::ifstream in(std::string(DIABLO_SOURCE_DIR) + "/tests/worker/model/prompts.txt");
  std::vector<std::string> prompts;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) prompts.push_back(line);
  }
  return prompts;
}

TEST(MergeSmolLM2, TransformersLoadsTheMergedGgufWithOurTokensAndLogits) {
  const std::string gguf = DIABLO_MODEL_GGUF;
  if (gguf.empty() || !std::filesystem::exists(gguf)) GTEST_SKIP() << "no SmolLM2 GGUF";
  if (!diablo::testing::HaveVenvPython()) GTEST_SKIP() << "needs the test venv";
  ScratchDir dir;

  // A random adapter on three projection kinds, and our logits with it.
  LoadedModel loaded = LoadModel(gguf);
  peft::AdapterConfig config;
  config.blocks = 16;
  config.target_modules = {"q_proj", "v_proj", "down_proj"};
  peft::InjectAdapters(*loaded.model, config);
  {
    at::Generator gen = at::detail::createCPUGenerator(17);
    at::NoGradGuard no_grad;
    for (const auto& a : peft::FindAdapters(*loaded.model)) {
      for (at::Tensor t : a.layer->trainable_parameters())
        t.copy_(at::randn(t.sizes(), gen) * 0.02);
    }
  }
  peft::SaveAdapter(*loaded.model, config, dir / "adapter");
  loaded.model->eval();
  const auto tokenizer = LoadTokenizer(gguf);
  const std::vector<std::string> prompts = Prompts();
  ASSERT_GE(prompts.size(), 4u);
  std::vector<std::vector<int32_t>> ids;
  std::vector<at::Tensor> ours;
  for (const std::string& p : prompts) {
    ids.push_back(tokenizer->Encode(p, true));
    at::NoGradGuard no_grad;
    const std::vector<int64_t> row(ids.back().begin(), ids.back().end());
    ours.push_back(loaded.model->forward(at::tensor(row, at::kLong).unsqueeze(0))[0]);
  }

  const auto merged = diablo::testing::RunDiablo(
      {"merge", "--model", gguf, "--adapter", dir / "adapter", "--out", dir / "merged"});
  ASSERT_EQ(merged.exit_code, 0) << merged.output;
  const json hf_config = json::parse(ReadBytes(dir / "merged/config.json"));
  EXPECT_EQ(hf_config["torch_dtype"], "float32");
  EXPECT_EQ(hf_config["tie_word_embeddings"], true);

  // transformers' tokenizer on the exported files.
  std::ofstream(dir / "request.json") << json{{"texts", prompts}}.dump();
  auto tokenized = RunCommand({DIABLO_VENV_PYTHON,
                               std::string(DIABLO_SOURCE_DIR) + "/tests/text/hf_reference.py",
                               "auto", dir / "merged", dir / "request.json", dir / "tokens.json"});
  ASSERT_EQ(tokenized.exit_code, 0) << tokenized.output;
  const json tokens = json::parse(ReadBytes(dir / "tokens.json"));
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(tokens["ids"][i].get<std::vector<int32_t>>(), ids[i]) << prompts[i];
  }

  // transformers' model on the merged weights.
  std::ofstream(dir / "ids.json") << json(ids).dump();
  auto logits = diablo::testing::RunMergeReference({"logits", "--model", dir / "merged", "--ids",
                                                    dir / "ids.json", "--out", dir / "logits.bin"});
  ASSERT_EQ(logits.exit_code, 0) << logits.output;
  std::string bytes = ReadBytes(dir / "logits.bin");
  const at::Tensor expected = at::cat(ours).contiguous();
  ASSERT_EQ(bytes.size(), static_cast<size_t>(expected.numel()) * sizeof(float));
  const at::Tensor theirs = at::from_blob(bytes.data(), expected.sizes(), at::kFloat);
  const double diff = (theirs - expected).abs().max().item<double>();
  // The GGUF parity test's margin (transformers and our kernels sum in other
  // orders); merging itself adds rounding far below it.
  EXPECT_LE(diff, 1e-3) << "merged logits differ from ours with the adapter by " << diff;
  // The adapter must have changed the model, or the comparison proves little.
  LoadedModel base = LoadModel(gguf);
  at::NoGradGuard no_grad;
  const std::vector<int64_t> row(ids[0].begin(), ids[0].end());
  const at::Tensor plain = base.model->forward(at::tensor(row, at::kLong).unsqueeze(0))[0];
  EXPECT_GT((plain - ours[0]).abs().max().item<double>(), 100 * diff);
}

}  // namespace
}  // namespace diablo::model
