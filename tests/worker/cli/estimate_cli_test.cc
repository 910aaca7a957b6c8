// `diablo estimate` run as a user runs it: the paper's Llama-2-7B number in
// the printed table and in --json, and clear errors with a non-zero exit for
// bad input.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace diablo {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

CommandResult Diablo(const std::string& args) {
  const std::string command = std::string(DIABLO_BINARY_DIR) + "/bin/diablo " + args + " 2>&1";
  CommandResult run;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return run;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) run.output.append(buffer, n);
  const int status = ::pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

// Llama-2-7B's config.json in a fresh directory, removed afterwards.
class EstimateCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "diablo-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    std::ofstream(dir_ / "config.json") << R"({
      "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 11008,
      "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
      "vocab_size": 32000, "rms_norm_eps": 1e-05, "torch_dtype": "float16"})";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Dir() const { return dir_.string(); }
  std::string Config() const { return (dir_ / "config.json").string(); }

 private:
  std::filesystem::path dir_;
};

constexpr const char* kPaperTargets = "--targets q_proj,k_proj,v_proj,up_proj,down_proj";

TEST_F(EstimateCli, PrintsThePapersTrainableParametersForLlama2_7B) {
  const CommandResult run =
      Diablo("estimate --model " + Dir() + " --method diablo --blocks 64 " + kPaperTargets);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, ContainsRegex("trainable parameters +70,254,592 \\(1\\.04%\\)"));
  EXPECT_THAT(run.output, ContainsRegex("model parameters +6,738,415,616"));
  EXPECT_THAT(run.output, ContainsRegex("up_proj +32 +22,544,384"));
  EXPECT_THAT(run.output, ContainsRegex("AdamW state \\(fp32\\) +536\\.0 MiB"));
}

TEST_F(EstimateCli, JsonCarriesTheSameNumbers) {
  const CommandResult run = Diablo("estimate --model " + Config() + " --blocks 64 " +
                                   kPaperTargets + " --dtype bf16 --gradient-checkpointing --json");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json j = nlohmann::json::parse(run.output);
  EXPECT_EQ(j["trainable_parameters"], 70'254'592);
  EXPECT_EQ(j["total_parameters"], 6'738'415'616);
  EXPECT_EQ(j["dtype"], "bfloat16");
  EXPECT_EQ(j["targets"].size(), 5u);
  EXPECT_EQ(j["memory_bytes"]["optimizer"], 8 * 70'254'592ull);
  EXPECT_TRUE(j["gradient_checkpointing"].get<bool>());
}

TEST_F(EstimateCli, ReadsTheRealGgufModel) {
  if (!std::filesystem::exists(DIABLO_MODEL_GGUF)) GTEST_SKIP() << "needs the test model";
  const CommandResult run =
      Diablo(std::string("estimate --model ") + DIABLO_MODEL_GGUF + " --dtype gguf");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, ContainsRegex("model parameters +134,515,008"));
  EXPECT_THAT(run.output, ContainsRegex("frozen weights +92\\.1 MiB"));
}

TEST_F(EstimateCli, BadInputFailsWithAMessage) {
  CommandResult run = Diablo("estimate --model " + Dir() + " --method dora");
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.output, HasSubstr("--method"));
  EXPECT_THAT(run.output, HasSubstr("dora"));

  run = Diablo("estimate --model " + Dir() + " --blocks 0");
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.output, HasSubstr("--blocks"));

  run = Diablo("estimate --model " + Dir() + "/missing.gguf");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.output, HasSubstr("missing.gguf: no such file or directory"));

  run = Diablo("estimate --model " + Dir() + " --targets q_proj,qkv_proj");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.output, HasSubstr("diablo estimate: error: target 'qkv_proj' matches no module"));

  run = Diablo("estimate --model " + Config() + " --dtype gguf");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.output, HasSubstr("is not a GGUF file"));
}

TEST_F(EstimateCli, HelpShowsExamples) {
  const CommandResult run = Diablo("estimate --help");
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_THAT(run.output, HasSubstr("diablo estimate --model"));
  EXPECT_THAT(run.output, HasSubstr("--gradient-checkpointing"));
}

}  // namespace
}  // namespace diablo
