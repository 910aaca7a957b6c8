// The real thing on SmolLM2-135M-Instruct: DiaBlo fine-tuning teaches it the
// demo task (dates as DD/MM/YYYY) that it gets wrong out of the box, judged
// by `diablo eval` on held-out dates.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace {

namespace fs = std::filesystem;
const std::string kBin = std::string(DIABLO_BINARY_DIR) + "/bin/diablo";
const std::string kModel = DIABLO_MODEL_GGUF;

std::string Capture(const std::string& command) {
  std::FILE* pipe = ::popen(command.c_str(), "r");
  std::string out;
  char buffer[4096];
  while (pipe != nullptr && std::fgets(buffer, sizeof buffer, pipe) != nullptr) out += buffer;
  int status = ::pclose(pipe);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << command << "\n" << out;
  return out;
}

double Accuracy(const std::string& eval, const std::string& adapter_flag) {
  std::string out =
      Capture(kBin + " eval --model " + kModel + " " + adapter_flag + " --data " + eval +
              " --task exact --max-new-tokens 12 --limit 20 --json --threads 2");
  return nlohmann::json::parse(out)["accuracy"].get<double>();
}

TEST(SmolLMTraining, DiaBloTeachesTheDatesTask) {
  if (kModel.empty() || !fs::exists(kModel))
    GTEST_SKIP() << "needs the SmolLM2 GGUF (scripts/setup.sh)";
  fs::path dir = fs::temp_directory_path() / ("diablo-smollm-train-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  Capture("python3 " + std::string(DIABLO_SOURCE_DIR) + "/scripts/make_demo_data.py " +
          dir.string() + " 400");
  std::ofstream(dir / "job.json") << nlohmann::json{
      {"model", kModel},
      {"method",
       {{"name", "diablo"},
        {"blocks", 32},
        {"target_modules",
         {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}}},
      {"data", {{"train", (dir / "train.jsonl").string()}, {"max_seq_len", 128}}},
      {"optim",
       {{"max_steps", 24},
        {"global_batch", 8},
        {"lr", 3e-3},
        {"warmup_steps", 3},
        {"scheduler", "cosine"}}},
      {"output_dir", (dir / "run").string()},
      {"threads", 2}}.dump();

  const std::string eval = (dir / "eval.jsonl").string();
  const double before = Accuracy(eval, "");
  std::string events = Capture(kBin + " train " + (dir / "job.json").string() + " --events");
  const double after = Accuracy(eval, "--adapter " + (dir / "run" / "adapter").string());
  std::printf("exact-match accuracy on 20 held-out dates: before %.0f%%, after %.0f%%\n",
              100 * before, 100 * after);
  EXPECT_LE(before, 0.1);
  EXPECT_GE(after, 0.7);
  fs::remove_all(dir);
}

}  // namespace
