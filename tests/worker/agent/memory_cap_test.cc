// The trainer memory cap as an operator sets it (--trainer-memory-cap,
// --trainer-memory-headroom) and as each attempt gets it: the flag's values,
// the auto cap from the job's estimate, and the jobs that get no cap, each
// with the line that tells the operator why.
#include "worker/agent/memory_cap.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "spec/estimate.h"
#include "spec/model_source.h"
#include "tests/worker/agent/small_llama_config.h"

namespace diablo::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;
using Mode = TrainerMemoryCapSetting::Mode;

constexpr int64_t kGiB = int64_t{1} << 30;
constexpr int64_t kMiB = int64_t{1} << 20;

TEST(ParseTrainerMemoryCapTest, AutoAndOffAreWordsInAnyCase) {
  auto automatic = ParseTrainerMemoryCap("auto");
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  EXPECT_EQ(automatic->mode, Mode::kAuto);
  auto off = ParseTrainerMemoryCap(" OFF ");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(off->mode, Mode::kOff);
}

TEST(ParseTrainerMemoryCapTest, SizesTakeBinaryAndDecimalUnitsAsCacheMaxBytesDoes) {
  const std::pair<const char*, int64_t> cases[] = {
      {"8GiB", 8 * kGiB},           {"8 GiB", 8 * kGiB},    {"8gib", 8 * kGiB},
      {"1.5GiB", 3 * kGiB / 2},     {"512MiB", 512 * kMiB}, {"2GB", 2'000'000'000},
      {"1073741824", kGiB},         {"1073741824B", kGiB},  {"1TiB", 1024 * kGiB},
      {"300000KiB", 300000 * 1024}, {"4G", 4'000'000'000},  {"4Gi", 4 * kGiB},
  };
  for (const auto& [text, bytes] : cases) {
    SCOPED_TRACE(text);
    auto setting = ParseTrainerMemoryCap(text);
    ASSERT_TRUE(setting.ok()) << setting.status();
    EXPECT_EQ(setting->mode, Mode::kFixed);
    EXPECT_EQ(setting->bytes, bytes);
  }
}

TEST(ParseTrainerMemoryCapTest, WhatIsNotACapSaysWhatToGive) {
  for (const char* text : {"", "lots", "8XB", "-1GiB", "GiB", "1.2.3GiB", "1e9"}) {
    SCOPED_TRACE(text);
    auto setting = ParseTrainerMemoryCap(text);
    ASSERT_FALSE(setting.ok());
    EXPECT_THAT(setting.status().message(), HasSubstr("--trainer-memory-cap"));
    EXPECT_THAT(setting.status().message(), HasSubstr("auto, off, or a size such as 8GiB"));
  }
  auto unit = ParseTrainerMemoryCap("8XB");
  EXPECT_THAT(unit.status().message(), HasSubstr("unknown unit 'xb'"));
}

TEST(ParseTrainerMemoryCapTest, ACapTooSmallForATrainerToStartIsRefused) {
  for (const char* text : {"0", "100MiB", "255MiB"}) {
    SCOPED_TRACE(text);
    auto setting = ParseTrainerMemoryCap(text);
    ASSERT_FALSE(setting.ok());
    EXPECT_THAT(setting.status().message(), HasSubstr("below 256 MiB"));
    EXPECT_THAT(setting.status().message(), HasSubstr("off for no cap"));
  }
  EXPECT_TRUE(ParseTrainerMemoryCap("256MiB").ok());
}

TEST(FormatMemoryTest, MebibytesBelowOneGibibyteThenGibibytes) {
  EXPECT_EQ(FormatMemory(320 * kMiB), "320 MiB");
  EXPECT_EQ(FormatMemory(kGiB), "1.0 GiB");
  EXPECT_EQ(FormatMemory(3 * kGiB + kGiB / 5), "3.2 GiB");
  EXPECT_EQ(FormatMemory(4096), "4096 bytes");
}

TEST(AutoMemoryCapBytesTest, IsTheEstimateWithHeadroomPlusTheRuntime) {
  EXPECT_EQ(AutoMemoryCapBytes(2 * kGiB, 1.5, kGiB), 4 * kGiB);
  EXPECT_EQ(AutoMemoryCapBytes(0, 1.5, kGiB), kGiB)
      << "a tiny job still gets room for LibTorch itself";
  EXPECT_EQ(AutoMemoryCapBytes(1001, 1.5, 0), 1502) << "rounded up";
  EXPECT_GT(AutoMemoryCapBytes(int64_t{1} << 62, 100.0, kGiB), int64_t{1} << 59)
      << "a huge estimate saturates instead of wrapping to a tiny cap";
}

TEST(TrainerRuntimeBytesTest, IsAGibibyteAndEachThreadsStackAndArena) {
  struct rlimit stack = {};
  ASSERT_EQ(getrlimit(RLIMIT_STACK, &stack), 0);
  const int64_t stack_bytes =
      stack.rlim_cur == RLIM_INFINITY ? 8 * kMiB : static_cast<int64_t>(stack.rlim_cur);
  EXPECT_EQ(TrainerRuntimeBytes(1), kGiB + stack_bytes + 8 * kMiB);
  EXPECT_EQ(TrainerRuntimeBytes(64) - TrainerRuntimeBytes(1), 63 * (stack_bytes + 8 * kMiB))
      << "a trainer with many threads on a large node needs room for their stacks";
  const int64_t cpus = std::max<int64_t>(1, std::thread::hardware_concurrency());
  EXPECT_EQ(TrainerRuntimeBytes(0), TrainerRuntimeBytes(cpus))
      << "threads: 0 is LibTorch's default, one per CPU";
}

// A job on a config-only Llama (the estimate reads shapes, not weights).
class DecideMemoryCapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("diablo-memory-cap-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_ / "model");
    std::ofstream(dir_ / "model" / "config.json") << agent::testing::SmallLlamaConfig().dump();
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // The trainer's config as the agent writes it: inputs at local paths.
  json Config(const std::string& device = "auto") const {
    return {{"model", (dir_ / "model").string()},
            {"method", {{"name", "diablo"}, {"blocks", 4}}},
            {"data", {{"train", (dir_ / "train.jsonl").string()}, {"max_seq_len", 128}}},
            {"optim", {{"global_batch", 8}, {"max_steps", 10}}},
            {"device", device},
            {"threads", 2},
            {"output_dir", (dir_ / "output").string()}};
  }

  fs::path dir_;
};

TEST_F(DecideMemoryCapTest, AutoIsTheJobsEstimateForOneRankWithHeadroom) {
  const MemoryCap cap = DecideMemoryCap({}, 1.5, /*gpu_worker=*/false, Config(), /*world_size=*/2);

  // The job's options written out by hand: two ranks share the global batch
  // of 8, so each runs micro-batches of 4 sequences of 128 tokens.
  estimate::EstimateOptions options;
  options.method = estimate::Method::kDiaBlo;
  options.blocks = 4;
  options.micro_batch = 4;
  options.seq_len = 128;
  const estimate::ModelSource source = estimate::ReadModelSource((dir_ / "model").string());
  const int64_t expected =
      static_cast<int64_t>(estimate::EstimateTraining(source.config, options).memory.total);
  ASSERT_GT(expected, 0);
  const int64_t runtime = TrainerRuntimeBytes(2);  // the job's threads: 2
  EXPECT_EQ(cap.bytes, AutoMemoryCapBytes(expected, 1.5, runtime));
  EXPECT_EQ(cap.explanation, "memory cap " + FormatMemory(cap.bytes) + " = estimate " +
                                 FormatMemory(expected) + " × 1.5 + " + FormatMemory(runtime) +
                                 " runtime of 2 threads (--trainer-memory-cap auto)");
}

TEST_F(DecideMemoryCapTest, HeadroomScalesTheEstimate) {
  const MemoryCap low = DecideMemoryCap({}, 1.0, false, Config(), 1);
  const MemoryCap high = DecideMemoryCap({}, 3.0, false, Config(), 1);
  const int64_t runtime = TrainerRuntimeBytes(2);
  ASSERT_GT(low.bytes, runtime);
  EXPECT_EQ(high.bytes - runtime, 3 * (low.bytes - runtime));
  EXPECT_THAT(high.explanation, HasSubstr("× 3 +"));
}

TEST_F(DecideMemoryCapTest, AnExplicitSizeCapsEveryTrainerAndOffCapsNone) {
  const MemoryCap fixed =
      DecideMemoryCap({Mode::kFixed, 6 * kGiB}, 1.5, /*gpu_worker=*/true, Config("cuda"), 1);
  EXPECT_EQ(fixed.bytes, 6 * kGiB) << "an operator's size holds on GPU trainers too";
  EXPECT_EQ(fixed.explanation, "memory cap 6.0 GiB (--trainer-memory-cap)");
  const MemoryCap off = DecideMemoryCap({Mode::kOff, 0}, 1.5, false, Config(), 1);
  EXPECT_EQ(off.bytes, 0);
  EXPECT_EQ(off.explanation, "no memory cap (--trainer-memory-cap off)");
}

TEST_F(DecideMemoryCapTest, AutoLeavesTrainersOnCudaUncapped) {
  for (const auto& [device, gpu_worker] :
       {std::pair<const char*, bool>{"cuda", true}, {"auto", true}}) {
    SCOPED_TRACE(device);
    const MemoryCap cap = DecideMemoryCap({}, 1.5, gpu_worker, Config(device), 1);
    EXPECT_EQ(cap.bytes, 0);
    EXPECT_THAT(cap.explanation, HasSubstr("no memory cap: the trainer runs on CUDA"));
  }
  EXPECT_GT(DecideMemoryCap({}, 1.5, /*gpu_worker=*/true, Config("cpu"), 1).bytes, 0)
      << "a job that asks for the CPU of a GPU worker is capped like any CPU trainer";
}

TEST_F(DecideMemoryCapTest, AJobThatCannotBeEstimatedRunsUncappedAndTheLineSaysWhy) {
  json unknown_format = Config();
  std::ofstream(dir_ / "weights.bin") << "not a model";
  unknown_format["model"] = (dir_ / "weights.bin").string();
  const MemoryCap format = DecideMemoryCap({}, 1.5, false, unknown_format, 1);
  EXPECT_EQ(format.bytes, 0);
  EXPECT_THAT(format.explanation, HasSubstr("no memory cap: cannot estimate the job's memory"));
  EXPECT_THAT(format.explanation, HasSubstr("weights.bin"));

  json unreadable = Config();
  unreadable["optim"]["global_batch"] = "eight";
  const MemoryCap config = DecideMemoryCap({}, 1.5, false, unreadable, 1);
  EXPECT_EQ(config.bytes, 0);
  EXPECT_THAT(config.explanation, HasSubstr("cannot read the job's config"));
  EXPECT_THAT(config.explanation, HasSubstr("optim.global_batch"));
}

}  // namespace
}  // namespace diablo::agent
