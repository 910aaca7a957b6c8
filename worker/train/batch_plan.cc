#include "worker/train/batch_plan.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace diablo::train {
namespace {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, bound) without modulo bias.
uint64_t Below(uint64_t& state, uint64_t bound) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  for (;;) {
    uint64_t r = SplitMix64(state);
    if (r < limit) return r % bound;
  }
}

}  // namespace

std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  uint64_t state = seed * 0x100000001B3ull + static_cast<uint64_t>(epoch) + 1;
  for (int64_t i = n - 1; i > 0; --i) {
    auto j = static_cast<int64_t>(Below(state, static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

BatchPlan::BatchPlan(int64_t examples, int64_t global_batch, int64_t micro_batch, int64_t epochs,
                     int64_t max_steps, uint64_t seed, int world, int rank)
    : examples_(examples), global_batch_(global_batch), seed_(seed), world_(world), rank_(rank) {
  if (examples <= 0) throw std::invalid_argument("the training set has no examples");
  if (global_batch < world)
    throw std::invalid_argument("optim.global_batch (" + std::to_string(global_batch) +
                                ") is smaller than the number of ranks (" + std::to_string(world) +
                                ")");
  const int64_t per_rank = (global_batch + world - 1) / world;
  micro_batch_ = micro_batch > 0 ? std::min(micro_batch, per_rank) : per_rank;
  steps_per_epoch_ = (examples + global_batch - 1) / global_batch;
  total_steps_ = max_steps > 0 ? max_steps : steps_per_epoch_ * epochs;
}

std::vector<int64_t> BatchPlan::GlobalBatch(int64_t step) const {
  const int64_t epoch = EpochOf(step);
  if (epoch != cached_epoch_) {
    cached_order_ = EpochOrder(examples_, seed_, epoch);
    cached_epoch_ = epoch;
  }
  const int64_t begin = (step % steps_per_epoch_) * global_batch_;
  const int64_t end = std::min(begin + global_batch_, examples_);
  return {cached_order_.begin() + begin, cached_order_.begin() + end};
}

std::vector<std::vector<int64_t>> BatchPlan::MicroBatches(int64_t step) const {
  std::vector<int64_t> mine;
  std::vector<int64_t> batch = GlobalBatch(step);
  for (size_t i = static_cast<size_t>(rank_); i < batch.size(); i += static_cast<size_t>(world_))
    mine.push_back(batch[i]);
  std::vector<std::vector<int64_t>> micro;
  for (size_t i = 0; i < mine.size(); i += static_cast<size_t>(micro_batch_))
    micro.emplace_back(mine.begin() + static_cast<std::ptrdiff_t>(i),
                       mine.begin() + static_cast<std::ptrdiff_t>(std::min(
                                          mine.size(), i + static_cast<size_t>(micro_batch_))));
  return micro;
}

}  // namespace diablo::train
