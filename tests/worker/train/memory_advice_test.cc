// The out-of-memory message: the job's estimate when it can be computed, and
// only advice that applies to this job.
#include "worker/train/memory_advice.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/worker/train/train_test_util.h"

namespace diablo::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MemoryAdvice, NamesTheEstimateAndTheSettingsThatWouldHelp) {
  const auto dir = MakeScratch("oom-advice");
  train::TrainConfig config = Parse(TinyConfig(dir));
  const std::string message = train::OutOfMemoryMessage(config, 1, "host");
  EXPECT_THAT(message, HasSubstr("out of host memory"));
  EXPECT_THAT(message, HasSubstr("the estimate for this job is"));
  EXPECT_THAT(message, HasSubstr("diablo estimate"));
  EXPECT_THAT(message, HasSubstr("optim.micro_batch"));
  EXPECT_THAT(message, HasSubstr("gradient_checkpointing: true"));
  EXPECT_THAT(message, HasSubstr("precision: bf16"));
  // A Hugging Face directory has nothing to pack.
  EXPECT_THAT(message, Not(HasSubstr("base_weights: packed")));

  config.gradient_checkpointing = true;
  config.precision = Precision::kBf16;
  const std::string tuned = train::OutOfMemoryMessage(config, 1, "device");
  EXPECT_THAT(tuned, HasSubstr("out of device memory"));
  EXPECT_THAT(tuned, Not(HasSubstr("gradient_checkpointing: true")));
  EXPECT_THAT(tuned, Not(HasSubstr("precision: bf16")));
}

TEST(MemoryAdvice, WithoutAReadableModelTheAdviceStandsAlone) {
  const auto dir = MakeScratch("oom-advice-nomodel");
  train::TrainConfig config = Parse(TinyConfig(dir));
  config.model = (dir / "missing.gguf").string();
  const std::string message = train::OutOfMemoryMessage(config, 1, "host");
  EXPECT_THAT(message, Not(HasSubstr("estimate for this job")));
  EXPECT_THAT(message, HasSubstr("base_weights: packed"));
}

TEST(MemoryAdvice, RecognisesLibTorchsAllocationFailures) {
  EXPECT_TRUE(train::IsAllocationFailure(
      "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
      "you tried to allocate 67108864 bytes. Error code 12 (Cannot allocate memory)"));
  EXPECT_TRUE(train::IsAllocationFailure("CUDA out of memory. Tried to allocate 2.00 GiB"));
  EXPECT_FALSE(train::IsAllocationFailure("shape '[8, 8, 5]' is invalid for input of size 2560"));
}

}  // namespace
}  // namespace diablo::testing
