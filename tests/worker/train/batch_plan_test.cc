// The batch plan and the learning-rate schedule: pure functions the resume
// and data-parallel guarantees rest on.
#include "worker/train/batch_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "worker/train/lr_schedule.h"

namespace diablo::train {
namespace {

TEST(EpochOrder, IsAPermutationThatDependsOnSeedAndEpoch) {
  auto a = EpochOrder(100, 7, 0);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  EXPECT_EQ(a, EpochOrder(100, 7, 0));
  EXPECT_NE(a, EpochOrder(100, 7, 1));
  EXPECT_NE(a, EpochOrder(100, 8, 0));
}

TEST(BatchPlan, RanksSplitEachGlobalBatchWithoutOverlap) {
  const int world = 3;
  BatchPlan whole(50, 12, 0, 2, 0, 5, 1, 0);
  EXPECT_EQ(whole.steps_per_epoch(), 5);  // the last batch has 2 examples
  EXPECT_EQ(whole.total_steps(), 10);
  for (int64_t step = 0; step < whole.total_steps(); ++step) {
    std::multiset<int64_t> seen;
    for (int rank = 0; rank < world; ++rank) {
      BatchPlan plan(50, 12, 2, 2, 0, 5, world, rank);
      for (const auto& micro : plan.MicroBatches(step)) {
        EXPECT_LE(micro.size(), 2u);
        seen.insert(micro.begin(), micro.end());
      }
    }
    auto global = whole.GlobalBatch(step);
    EXPECT_EQ(seen, std::multiset<int64_t>(global.begin(), global.end())) << "step " << step;
  }
  // Every example once per epoch.
  std::set<int64_t> epoch;
  for (int64_t step = 0; step < 5; ++step)
    for (int64_t i : whole.GlobalBatch(step)) EXPECT_TRUE(epoch.insert(i).second);
  EXPECT_EQ(epoch.size(), 50u);
}

TEST(BatchPlan, MaxStepsOverridesEpochsAndWrapsAround) {
  BatchPlan plan(10, 4, 0, 1, 7, 1, 1, 0);
  EXPECT_EQ(plan.total_steps(), 7);
  EXPECT_EQ(plan.EpochOf(6), 2);
  EXPECT_THROW(BatchPlan(0, 4, 0, 1, 0, 1, 1, 0), std::invalid_argument);
  EXPECT_THROW(BatchPlan(10, 2, 0, 1, 0, 1, 4, 0), std::invalid_argument);
}

TEST(LearningRate, WarmsUpThenDecays) {
  OptimConfig o;
  o.lr = 1.0;
  o.warmup_steps = 4;
  o.scheduler = Schedule::kLinear;
  EXPECT_DOUBLE_EQ(LearningRate(o, 0, 14), 0.25);
  EXPECT_DOUBLE_EQ(LearningRate(o, 3, 14), 1.0);
  EXPECT_DOUBLE_EQ(LearningRate(o, 4, 14), 1.0);
  EXPECT_DOUBLE_EQ(LearningRate(o, 9, 14), 0.5);
  o.scheduler = Schedule::kCosine;
  EXPECT_NEAR(LearningRate(o, 9, 14), 0.5, 1e-12);
  EXPECT_NEAR(LearningRate(o, 14, 14), 0.0, 1e-12);
  o.scheduler = Schedule::kConstant;
  EXPECT_DOUBLE_EQ(LearningRate(o, 13, 14), 1.0);
  o.warmup_steps = 0;
  o.warmup_ratio = 0.1;
  EXPECT_EQ(WarmupSteps(o, 95), 10);
}

}  // namespace
}  // namespace diablo::train
