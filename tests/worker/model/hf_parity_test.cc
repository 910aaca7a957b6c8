// Small random models made and saved by Hugging Face transformers (Llama,
// Llama with grouped-query attention and tied embeddings, Llama 3.1 rope
// scaling, Qwen2 with q/k/v biases) load through our HF-directory loader and
// give transformers' logits to 1e-4 in fp32.
#include <ATen/ATen.h>

#include "formats/gguf.h"
#include "tests/worker/model/reference_io.h"
#include "worker/model/load_model.h"

namespace diablo::model {
namespace {

class HfParity : public ::testing::TestWithParam<const char*> {};

TEST_P(HfParity, LogitsMatchTransformers) {
  if (!testing::HaveVenv()) GTEST_SKIP() << "needs the test venv";
  testing::TempDir dir;
  auto index = testing::RunReference(std::string("tiny --arch ") + GetParam(), dir.path());
  ASSERT_FALSE(index.empty());
  LoadedModel loaded = LoadModel(dir.path() + "/model");
  EXPECT_EQ(loaded.format, "hf");

  auto ids = testing::ReadArray<int64_t>(dir.path(), "input_ids");
  auto expected = testing::ReadArray<float>(dir.path(), "logits");
  auto shape = index["input_ids"]["shape"].get<std::vector<int64_t>>();
  at::Tensor input = at::tensor(ids, at::kLong).view(shape);
  at::NoGradGuard no_grad;
  at::Tensor logits = loaded.model->forward(input).contiguous();
  ASSERT_EQ(logits.numel(), static_cast<int64_t>(expected.size()));
  at::Tensor reference = at::from_blob(expected.data(), logits.sizes(), at::kFloat);
  const double max_diff = (logits - reference).abs().max().item<double>();
  EXPECT_LE(max_diff, 1e-4) << GetParam() << ": logits differ by " << max_diff;
}

INSTANTIATE_TEST_SUITE_P(Architectures, HfParity,
                         ::testing::Values("llama", "gqa", "llama31", "qwen2"));

TEST(HfLoader, RefusesDirectoriesWithoutWeightsOrConfig) {
  testing::TempDir dir;
  EXPECT_THROW(
      {
        try {
          LoadModel(dir.path());
        } catch (const FormatError& e) {
          EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
          throw;
        }
      },
      FormatError);
  EXPECT_THROW(LoadModel(dir.path() + "/missing"), std::invalid_argument);
}

}  // namespace
}  // namespace diablo::model
