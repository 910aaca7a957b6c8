// How much memory diablo-worker lets each trainer it starts take, so that an
// oversized job fails with the trainer's own `out_of_memory` error instead of
// the kernel's OOM killer (or swapping) taking the node down.  The cap is the
// child's RLIMIT_DATA (worker/agent/process.h): by default the job's memory
// estimate (spec/job_estimate.h) with headroom, on CPU trainers only.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace diablo::agent {

// --trainer-memory-cap: `auto`, `off`, or a size.
struct TrainerMemoryCapSetting {
  enum class Mode { kAuto, kOff, kFixed };
  Mode mode = Mode::kAuto;
  int64_t bytes = 0;  // kFixed only
};

inline constexpr double kDefaultTrainerMemoryHeadroom = 1.5;
// What a trainer holds besides the tensors the estimate counts, added to
// estimate × headroom: LibTorch's own writable segments (a CUDA build's
// libraries reserve about 0.5 GiB even on CPU), allocator slack, the
// tokenizer and the tokenised dataset ...
inline constexpr int64_t kTrainerRuntimeBytes = int64_t{1} << 30;
// ... and, per thread, its stack (RLIMIT_STACK, usually 8 MiB) and what its
// malloc arena holds: 64 threads on a large node take about 1 GiB.
inline constexpr int64_t kTrainerArenaBytesPerThread = int64_t{8} << 20;
// Below this not even LibTorch starts; a smaller explicit cap is a typo.
inline constexpr int64_t kMinTrainerMemoryCap = int64_t{256} << 20;

// Parses `auto`, `off`, or a size: bytes, or a number with a unit, KiB MiB
// GiB TiB (powers of 1024) or KB MB GB TB (powers of 1000), as --cache-max-bytes.
absl::StatusOr<TrainerMemoryCapSetting> ParseTrainerMemoryCap(absl::string_view text);

// "1.5 GiB", "320 MiB": sizes in the agent's log lines.
std::string FormatMemory(int64_t bytes);

// The runtime's share of a trainer of `threads` compute threads (0: one per
// CPU of this machine, LibTorch's default).
int64_t TrainerRuntimeBytes(int64_t threads);

// ceil(estimate × headroom) + runtime.
int64_t AutoMemoryCapBytes(int64_t estimate_bytes, double headroom, int64_t runtime_bytes);

// The cap one attempt's trainers get, and the log line that says why.
struct MemoryCap {
  int64_t bytes = 0;  // 0: no cap
  // "memory cap 2.7 GiB = estimate 1.1 GiB × 1.5 + 1.1 GiB runtime of 8 threads (…)"
  std::string explanation;
};

// Decides the cap for an attempt from the trainer's config as the agent wrote
// it (local input paths), the job's world size and whether this worker offers
// GPUs.  `auto` estimates the job; a trainer that will run on CUDA, or a job
// that cannot be estimated (unknown model format, unreadable config), gets no
// cap, and the explanation says why.
MemoryCap DecideMemoryCap(const TrainerMemoryCapSetting& setting, double headroom, bool gpu_worker,
                          const nlohmann::json& trainer_config, int world_size);

}  // namespace diablo::agent
