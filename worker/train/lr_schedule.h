// The learning rate of each optimiser step: linear warm-up from lr/warmup to
// lr, then constant, linear decay to zero, or cosine decay to zero at the
// last step.
#pragma once

#include <cstdint>

#include "spec/train_config.h"

namespace diablo::train {

// Warm-up steps the config asks for: warmup_steps, or warmup_ratio of the
// total when warmup_steps is 0.
int64_t WarmupSteps(const OptimConfig& optim, int64_t total_steps);

// lr for 0-based `step` of `total_steps`.
double LearningRate(const OptimConfig& optim, int64_t step, int64_t total_steps);

}  // namespace diablo::train
