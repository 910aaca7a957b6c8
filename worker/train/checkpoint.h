// Checkpoints of a training run, written so that a crash at any moment
// leaves either the previous checkpoint or the new one, never half of one:
//
//   <output_dir>/checkpoints/step-00000010/
//       adapter_config.json, adapter_model.safetensors   (diablo / lora)
//       model.safetensors                                (full: every trained weight)
//       optimizer.pt        AdamW moments and step counts (LibTorch archive)
//       trainer_state.json  step, epoch, loss scale, world size, config digest
//   <output_dir>/checkpoints/latest                      "step-00000010"
//
// Each checkpoint is built in a ".tmp" sibling, every file fsync'd, then
// renamed into place; "latest" is rewritten (atomically) only after that.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "spec/train_config.h"

namespace diablo::train {

struct TrainerState {
  int64_t step = 0;  // optimiser steps completed
  int64_t epoch = 0;
  double loss_scale = 1.0;  // fp16 dynamic loss scaling
  int64_t good_steps = 0;   // since the loss scale last changed
  int world_size = 1;
  nlohmann::json to_json() const;
  static TrainerState FromJson(const nlohmann::json& j, const std::string& source);
};

std::string CheckpointsDir(const std::string& output_dir);
std::string CheckpointName(int64_t step);  // "step-00000010"

// Writes checkpoint `state.step`, points "latest" at it and removes older
// step-* checkpoints beyond the newest `keep` (the final one is kept by the
// caller writing it last).  Returns the checkpoint's path.  Throws
// std::domain_error, writing nothing, when a trained weight is NaN or
// infinite: such a checkpoint would make every resume diverge, so the last
// good one stays "latest".
std::string SaveCheckpoint(const std::string& output_dir, const TrainConfig& config,
                           torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                           const TrainerState& state, int64_t keep);

// The path of the newest complete checkpoint in output_dir ("" if none).
std::string LatestCheckpoint(const std::string& output_dir);

// Dropout draws from a generator seeded per (seed, rank, step), so no RNG
// state needs saving.
//
// Restores the trained tensors and the optimiser from `path` into a
// model and optimiser built from the same config.  The optimiser's moments
// load onto `device`, this rank's, whichever device wrote them (rank 0's
// GPU, or a CPU worker's).  Throws std::invalid_argument when the checkpoint
// does not fit (another method, shapes, world size).
TrainerState LoadCheckpoint(const std::string& path, const TrainConfig& config,
                            torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                            at::Device device);

// The parameters `full` trains, by their Hugging Face names.
std::vector<std::pair<std::string, at::Tensor>> TrainedParameters(torch::nn::Module& model);

// Writes TrainedParameters as safetensors (atomically): method full's
// checkpoints and final output.
void SaveTrainedWeights(torch::nn::Module& model, const std::string& path);

}  // namespace diablo::train
