// The estimator on the real SmolLM2 GGUF, from its metadata alone, against
// counts the gguf Python package derives from the tensor directory
// (tests/spec/estimate_reference.py) and against our own tensor infos.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "formats/gguf.h"
#include "gtest/gtest.h"
#include "spec/estimate.h"
#include "spec/model_source.h"
#include "tests/worker/model/reference_io.h"

namespace diablo::estimate {
namespace {

constexpr int64_t kBlocks = 64, kRank = 8;

nlohmann::json PythonReference() {
  const std::string command = std::string(DIABLO_VENV_PYTHON) + " " + DIABLO_SOURCE_DIR +
                              "/tests/spec/estimate_reference.py " + DIABLO_MODEL_GGUF + " " +
                              std::to_string(kBlocks) + " " + std::to_string(kRank);
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return {};
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  if (::pclose(pipe) != 0) {
    ADD_FAILURE() << command << " failed:\n" << output;
    return {};
  }
  return nlohmann::json::parse(output);
}

class EstimateGguf : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::HaveVenv() || !testing::HaveModel())
      GTEST_SKIP() << "needs the test venv and model";
  }
};

TEST_F(EstimateGguf, TotalParametersAndStoredBytesMatchTheTensorDirectory) {
  const nlohmann::json reference = PythonReference();
  ASSERT_FALSE(reference.empty());
  const ModelSource source = ReadModelSource(DIABLO_MODEL_GGUF);
  EXPECT_EQ(source.format, "gguf");
  EXPECT_EQ(source.config.num_hidden_layers, 30);
  EXPECT_TRUE(source.config.tie_word_embeddings);
  const Estimate e = EstimateTraining(source.config, {});
  EXPECT_EQ(e.total_parameters, reference["parameters"].get<int64_t>());
  EXPECT_EQ(source.stored_weight_bytes, reference["bytes"].get<uint64_t>());

  uint64_t ours = 0;
  const model::GgufFile file = model::GgufFile::Open(DIABLO_MODEL_GGUF);
  for (const auto& t : file.tensors()) ours += t.elements();
  EXPECT_EQ(static_cast<uint64_t>(e.total_parameters), ours);

  EstimateOptions stored;
  stored.base_weights = BaseWeights::kPacked;
  stored.stored_weight_bytes = source.stored_weight_bytes;
  EXPECT_EQ(EstimateTraining(source.config, stored).memory.frozen_weights,
            reference["bytes"].get<uint64_t>());
}

TEST_F(EstimateGguf, AdapterCountsMatchTheStoredProjectionShapes) {
  const nlohmann::json reference = PythonReference();
  ASSERT_FALSE(reference.empty());
  const ModelSource source = ReadModelSource(DIABLO_MODEL_GGUF);
  for (Method method : {Method::kDiaBlo, Method::kLoRA}) {
    EstimateOptions options;  // every projection, as training's default
    options.method = method;
    options.blocks = kBlocks;
    options.rank = kRank;
    const Estimate e = EstimateTraining(source.config, options);
    const nlohmann::json& counts = reference[FineTuneMethodName(method)];
    ASSERT_EQ(e.targets.size(), counts.size()) << FineTuneMethodName(method);
    int64_t sum = 0;
    for (const TargetCount& t : e.targets) {
      EXPECT_EQ(t.parameters, counts.value(t.module, int64_t{-1}))
          << FineTuneMethodName(method) << " " << t.module;
      EXPECT_EQ(t.layers, reference["layers"].value(t.module, int64_t{-1})) << t.module;
      sum += t.parameters;
    }
    EXPECT_EQ(e.trainable_parameters, sum);
  }
}

}  // namespace
}  // namespace diablo::estimate
