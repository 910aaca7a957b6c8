// The training job configuration: one schema for `diablo train config.yaml`
// run by hand and for the jobs the service hands to its workers.  Every
// field, its default and its meaning is in docs/training.md; parsing refuses
// unknown keys, wrong types and impossible values, naming the field.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "spec/adapter_config.h"
#include "spec/fine_tune_method.h"
#include "spec/precision.h"

namespace diablo::train {

using TrainMethod = FineTuneMethod;
enum class DataFormat { kAuto, kAlpaca, kChat, kText };
enum class Truncation { kRight, kDrop };  // cut the end of a long example, or skip it
enum class Schedule { kConstant, kLinear, kCosine };
using Precision = ::diablo::Precision;
// Packed base weights train adapters only (diablo, lora).
using BaseWeights = ::diablo::BaseWeights;

struct MethodConfig {
  TrainMethod name = TrainMethod::kDiaBlo;
  int64_t blocks = 64;
  int64_t rank = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  std::string init = "default";  // LoRA: default | pissa | milora
  // Every projection, as peft::AdapterConfig and `diablo estimate` default to.
  std::vector<std::string> target_modules = peft::AdapterConfig{}.target_modules;
};

struct DataConfig {
  std::string train;  // JSONL file
  std::string eval;   // JSONL file, optional
  DataFormat format = DataFormat::kAuto;
  std::string chat_template =
      "auto";  // auto (the model's) | chatml | llama2 | llama3 | mistral | alpaca
  int64_t max_seq_len = 512;
  Truncation truncation = Truncation::kRight;
  bool packing = false;
  bool train_on_prompt = false;  // loss on every token instead of the responses only
};

struct OptimConfig {
  int64_t epochs = 1;
  int64_t max_steps = 0;  // > 0 overrides epochs
  int64_t global_batch = 8;
  int64_t micro_batch = 0;            // 0: global_batch / world size (no accumulation)
  int64_t gradient_accumulation = 0;  // 0: derived from global and micro batch
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  Schedule scheduler = Schedule::kLinear;
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;   // used when warmup_steps is 0
  double max_grad_norm = 1.0;  // 0 disables clipping
  uint64_t seed = 42;
};

struct TrainConfig {
  std::string model;  // .gguf file or Hugging Face directory
  MethodConfig method;
  DataConfig data;
  OptimConfig optim;
  Precision precision = Precision::kFp32;
  BaseWeights base_weights = BaseWeights::kDense;
  bool gradient_checkpointing = false;
  int64_t eval_every = 0;  // steps; 0: at the end only (when an eval file is given)
  int64_t save_every = 0;  // steps; 0: at the end only
  int64_t keep_checkpoints = 2;
  int64_t log_every = 1;
  std::string output_dir;
  std::string init_adapter;     // continue from an existing adapter (new run, fresh optimiser)
  std::string device = "auto";  // auto | cpu | cuda
  int64_t threads = 0;          // CPU threads per rank; 0: LibTorch's default
  // Seconds a rank waits in a collective (gradient all-reduce, rendezvous)
  // before the whole gang fails: a rank that stops answering ends the run
  // in this time instead of hanging it.
  int64_t collective_timeout_s = 300;
  // auto: NCCL when each rank has a GPU of its own, Gloo otherwise (CPU, or
  // several ranks on one GPU, which NCCL refuses).  nccl or gloo: that
  // process group, joined even by a single rank.
  std::string collective_backend = "auto";
};

// Builds a config from a parsed document (YAML files are converted to the
// same JSON tree first).  `source` names the file in messages.  Throws
// std::invalid_argument "<source>: <field.path>: <problem>" for unknown
// keys, wrong types and values out of range.
TrainConfig ConfigFromJson(const nlohmann::json& doc, const std::string& source);

// Reads a .yaml/.yml or .json file and applies `overrides` ("optim.lr=3e-4",
// values in YAML/JSON scalar syntax) before validating.
TrainConfig LoadTrainConfig(const std::string& path, const std::vector<std::string>& overrides);

// The document as read and overridden, before validation (what the run
// records next to its checkpoints).
nlohmann::json ReadConfigDocument(const std::string& path,
                                  const std::vector<std::string>& overrides);

// The config back as JSON (every field, defaults included): recorded in the
// output directory so a run says exactly what it did.
nlohmann::json ConfigToJson(const TrainConfig& config);

// The adapter settings of a diablo/lora run (throws for method full).
peft::AdapterConfig ToAdapterConfig(const TrainConfig& config);

}  // namespace diablo::train
