// Trainable parameters and training memory of a DiaBlo, LoRA or full
// fine-tune, from the model's config alone (no weights, no LibTorch), so that
// `diablo estimate` and the scheduler give users the same numbers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/llama_config.h"
#include "spec/fine_tune_method.h"
#include "spec/precision.h"

namespace diablo::estimate {

using Method = FineTuneMethod;

struct EstimateOptions {
  Method method = Method::kDiaBlo;
  int64_t blocks = 64;  // DiaBlo: requested N (each layer's N_eff may be smaller)
  int64_t rank = 8;     // LoRA
  // Target syntax of peft::AdapterConfig: a plain name equals the last path
  // component, "re:<regex>" must match the whole dotted path.  The default is
  // AdapterConfig's (every projection), so an estimate without targets
  // describes what training without targets does.  Ignored by kFull.
  std::vector<std::string> target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};
  // Frozen weights and activations at `precision`; with BaseWeights::kPacked
  // the weights take the bytes the GGUF file stores them in,
  // `stored_weight_bytes` (ModelSource gives it).
  Precision precision = Precision::kFp32;
  BaseWeights base_weights = BaseWeights::kDense;
  uint64_t stored_weight_bytes = 0;
  int64_t micro_batch = 1;  // sequences per forward/backward
  int64_t seq_len = 2048;   // tokens per sequence (padded length)
  // Positions per micro-batch that carry a label and so need logits; 0 means
  // every position (the upper bound).
  int64_t label_tokens = 0;
  bool gradient_checkpointing = false;
};

// One module name among the trained modules ("q_proj"), over all layers.
struct TargetCount {
  std::string module;
  int64_t layers = 0;      // how many modules of that name train
  int64_t parameters = 0;  // trainable parameters in all of them
};

// Bytes; see the formula in estimate.cc and docs/cli.md.
struct MemoryEstimate {
  uint64_t frozen_weights = 0;
  uint64_t trainable = 0;    // trainable parameters, fp32
  uint64_t gradients = 0;    // fp32, one per trainable parameter
  uint64_t optimizer = 0;    // AdamW: two fp32 moments per trainable parameter
  uint64_t activations = 0;  // saved for backward, one micro-batch
  uint64_t total = 0;
};

struct Estimate {
  int64_t total_parameters = 0;  // of the base model (tied embeddings counted once)
  int64_t trainable_parameters = 0;
  double trainable_percent = 0;      // 100 * trainable / total
  std::vector<TargetCount> targets;  // in model order
  MemoryEstimate memory;
};

// Throws std::invalid_argument for out-of-range options (naming the field), a
// target that matches no module or matches one that is not a linear layer
// (as peft::InjectAdapters would), or an invalid "re:" pattern.
Estimate EstimateTraining(const model::LlamaConfig& config, const EstimateOptions& options);

}  // namespace diablo::estimate
