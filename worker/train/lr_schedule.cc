#include "worker/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace diablo::train {

int64_t WarmupSteps(const OptimConfig& optim, int64_t total_steps) {
  if (optim.warmup_steps > 0) return optim.warmup_steps;
  return static_cast<int64_t>(std::ceil(optim.warmup_ratio * static_cast<double>(total_steps)));
}

double LearningRate(const OptimConfig& optim, int64_t step, int64_t total_steps) {
  const int64_t warmup = WarmupSteps(optim, total_steps);
  // Step 0 of a warm-up already moves (lr / warmup), unlike schedules that
  // spend the first step at lr 0.
  if (step < warmup) return optim.lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double decay_steps = static_cast<double>(std::max<int64_t>(1, total_steps - warmup));
  const double progress = std::clamp(static_cast<double>(step - warmup) / decay_steps, 0.0, 1.0);
  switch (optim.scheduler) {
    case Schedule::kConstant:
      return optim.lr;
    case Schedule::kLinear:
      return optim.lr * (1.0 - progress);
    case Schedule::kCosine:
      return optim.lr * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
  }
  return optim.lr;
}

}  // namespace diablo::train
