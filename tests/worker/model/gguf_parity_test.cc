// The real SmolLM2-135M-Instruct Q4_1 GGUF through our loader and transformer
// gives the same logits as Hugging Face transformers loading the same file,
// and the same greedy continuation.
#include <ATen/ATen.h>

#include "tests/worker/model/reference_io.h"
#include "worker/model/generate.h"
#include "worker/model/load_model.h"

namespace diablo::model {
namespace {

using testing::ReadArray;

TEST(GgufParity, SmolLM2LogitsAndGreedyTokensMatchTransformers) {
  if (!testing::HaveVenv() || !testing::HaveModel())
    GTEST_SKIP() << "needs the test venv and model";
  testing::TempDir dir;
  auto index = testing::RunReference(std::string("gguf --model ") + DIABLO_MODEL_GGUF +
                                         " --prompts-file " + DIABLO_SOURCE_DIR +
                                         "/tests/worker/model/prompts.txt --new-tokens 32",
                                     dir.path());
  ASSERT_FALSE(index.empty());
  LoadedModel loaded = LoadModel(DIABLO_MODEL_GGUF);
  const int prompts = index["prompts"].get<int>();
  ASSERT_GE(prompts, 4);
  for (int i = 0; i < prompts; ++i) {
    auto ids = ReadArray<int64_t>(dir.path(), "ids_" + std::to_string(i));
    auto expected = ReadArray<float>(dir.path(), "logits_" + std::to_string(i));
    at::Tensor input = at::tensor(ids, at::kLong).unsqueeze(0);
    at::Tensor logits;
    {
      at::NoGradGuard no_grad;
      logits = loaded.model->forward(input)[0].contiguous();
    }
    at::Tensor reference = at::from_blob(expected.data(), logits.sizes(), at::kFloat);
    const double max_diff = (logits - reference).abs().max().item<double>();
    EXPECT_LE(max_diff, 1e-3) << "prompt " << i << ": logits differ by " << max_diff;

    GenerationOptions options;
    options.max_new_tokens = 32;
    auto generated = Generate(*loaded.model, {ids}, options);
    auto greedy = ReadArray<int64_t>(dir.path(), "greedy_" + std::to_string(i));
    EXPECT_EQ(generated[0].tokens, greedy) << "prompt " << i;
  }
}

TEST(GgufParity, BatchedGenerationEqualsOneByOne) {
  if (!testing::HaveModel()) GTEST_SKIP() << "needs the test model";
  LoadedModel loaded = LoadModel(DIABLO_MODEL_GGUF);
  // Prompts of different lengths exercise left padding and the attention mask.
  std::vector<std::vector<int64_t>> prompts = {
      {504, 3575, 282, 4649, 314}, {1348, 7337}, {28, 29, 30, 31, 32, 33, 34}};
  GenerationOptions options;
  options.max_new_tokens = 12;
  auto batched = Generate(*loaded.model, prompts, options);
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto single = Generate(*loaded.model, {prompts[i]}, options);
    EXPECT_EQ(batched[i].tokens, single[0].tokens) << "prompt " << i;
  }
}

}  // namespace
}  // namespace diablo::model
