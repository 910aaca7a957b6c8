// Which examples each optimiser step uses, on each rank: a deterministic
// shuffle per epoch (seeded), global batches taken in order from it, each
// global batch dealt round-robin to the ranks and cut into micro-batches.
// A pure function of (dataset size, config, world, step), so a resumed run
// or another rank computes the same plan without talking to anyone.
#pragma once

#include <cstdint>
#include <vector>

namespace diablo::train {

// A permutation of [0, n) for `epoch`, the same on every platform
// (SplitMix64-driven Fisher-Yates, not std::shuffle).
std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int64_t epoch);

class BatchPlan {
 public:
  // micro_batch 0: the whole per-rank share in one forward.  Throws
  // std::invalid_argument when the dataset is empty.
  BatchPlan(int64_t examples, int64_t global_batch, int64_t micro_batch, int64_t epochs,
            int64_t max_steps, uint64_t seed, int world, int rank);

  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  int64_t total_steps() const { return total_steps_; }
  int64_t micro_batch() const { return micro_batch_; }

  // Every example index of global step `step` (0-based), all ranks.  The
  // last batch of an epoch may be smaller.
  std::vector<int64_t> GlobalBatch(int64_t step) const;
  // This rank's share of it, cut into micro-batches (possibly none).
  std::vector<std::vector<int64_t>> MicroBatches(int64_t step) const;
  int64_t EpochOf(int64_t step) const { return step / steps_per_epoch_; }

 private:
  int64_t examples_, global_batch_, micro_batch_, steps_per_epoch_, total_steps_;
  uint64_t seed_;
  int world_, rank_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_order_;
};

}  // namespace diablo::train
