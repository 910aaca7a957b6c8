// Helpers of the training tests: a scratch directory with a tiny model, a
// generated task, configs, and an event sink that records.
#pragma once

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "spec/train_config.h"
#include "tests/worker/train/tiny_llm.h"
#include "worker/peft/tensor_io.h"
#include "worker/train/events.h"

namespace diablo::testing {

// The `diablo` binary of this build, for the tests that run it as users do.
inline const std::string kDiablo = std::string(DIABLO_BINARY_DIR) + "/bin/diablo";

class RecordingSink : public train::EventSink {
 public:
  void Emit(nlohmann::json event) override { events.push_back(std::move(event)); }
  std::vector<nlohmann::json> Of(const std::string& kind) const {
    std::vector<nlohmann::json> out;
    for (const auto& e : events)
      if (e.value("event", "") == kind) out.push_back(e);
    return out;
  }
  std::vector<nlohmann::json> events;
};

inline std::filesystem::path MakeScratch(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("diablo-train-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A small learnable task: the answer to "copy: abc" is "abc!".
inline void WriteCopyTask(const std::filesystem::path& file, int count, uint64_t seed = 3) {
  std::ofstream out(file);
  uint64_t state = seed;
  for (int i = 0; i < count; ++i) {
    std::string word;
    for (int k = 0; k < 3; ++k) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      word.push_back(static_cast<char>('a' + (state >> 33) % 6));
    }
    out << nlohmann::json{{"instruction", "copy"}, {"input", word}, {"output", word + "!"}}.dump()
        << "\n";
  }
}

// A config for the tiny model in `dir` (with the task written there).
inline nlohmann::json TinyConfig(const std::filesystem::path& dir) {
  if (!std::filesystem::exists(dir / "model")) WriteTinyLlm(dir / "model");
  if (!std::filesystem::exists(dir / "train.jsonl")) WriteCopyTask(dir / "train.jsonl", 24);
  return {
      {"model", (dir / "model").string()},
      {"method",
       {{"name", "diablo"},
        {"blocks", 4},
        {"target_modules", {"q_proj", "v_proj", "up_proj", "down_proj"}}}},
      {"data",
       {{"train", (dir / "train.jsonl").string()}, {"template", "chatml"}, {"max_seq_len", 64}}},
      {"optim",
       {{"max_steps", 20},
        {"global_batch", 4},
        {"micro_batch", 2},
        {"lr", 1e-2},
        {"scheduler", "cosine"},
        {"warmup_steps", 2},
        {"seed", 7}}},
      {"output_dir", (dir / "out").string()},
      {"threads", 1}};
}

// Writes `doc` as dir/name (JSON, which `diablo train` reads) and returns the path.
inline std::string WriteConfig(const std::filesystem::path& dir, const nlohmann::json& doc,
                               const std::string& name) {
  std::ofstream(dir / name) << doc.dump(2);
  return (dir / name).string();
}

// The final adapter a run wrote into its output_dir `out`.
inline std::map<std::string, at::Tensor> Adapter(const std::filesystem::path& out) {
  return peft::LoadSafetensors((out / "adapter" / "adapter_model.safetensors").string());
}

inline train::TrainConfig Parse(const nlohmann::json& doc) {
  return train::ConfigFromJson(doc, "test");
}

}  // namespace diablo::testing
