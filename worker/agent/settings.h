// What a diablo-worker agent is configured with (its command line).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/rpc_client.h"
#include "worker/agent/memory_cap.h"

namespace diablo::agent {

inline constexpr int64_t kDefaultCacheMaxBytes = int64_t{100} << 30;  // 100 GiB

struct AgentSettings {
  RpcClientOptions rpc;
  std::string name;                // node name (default: host name)
  std::string host = "127.0.0.1";  // address other ranks of a gang reach this node at
  int devices = 0;                 // GPUs offered; 0: a CPU worker (one rank at a time)
  int64_t memory_bytes = 0;        // per rank; 0: physical memory
  std::filesystem::path work_dir;  // job directories and the input cache
  // Bytes the input cache (work_dir/cache) may hold; the least recently
  // used files go first, never one an attempt on this node is using.
  // diablo-worker defaults it to half the work dir's file system, at most
  // kDefaultCacheMaxBytes.
  int64_t cache_max_bytes = kDefaultCacheMaxBytes;
  std::string diablo_binary;     // the trainer (`diablo`); default: next to diablo-worker
  std::string storage_override;  // storage URI instead of the scheduler's
  bool keep_job_dirs = false;    // keep finished job directories (debugging)
  int lease_wait_ms = 10000;     // long-poll length
  double kill_grace_s = 3;       // SIGTERM → SIGKILL when a job is cancelled or reassigned
  // SIGTERM → SIGKILL when this worker stops: long enough for the trainer to
  // write the checkpoint it writes on SIGTERM, so the retry loses no steps.
  double shutdown_grace_s = 120;
  // Each trainer's memory cap (worker/agent/memory_cap.h): by default the
  // job's estimate × headroom plus the runtime, on CPU trainers only.
  TrainerMemoryCapSetting trainer_memory_cap;
  double trainer_memory_headroom = kDefaultTrainerMemoryHeadroom;
};

}  // namespace diablo::agent
