// Runs one leased attempt on this node: fetches its inputs (and the
// checkpoint to resume from), starts one `diablo train --events` per local
// rank with the torchrun-style environment, forwards the trainers' events,
// uploads checkpoints (then reports them, so `latest` only ever names a
// complete one) and the final outputs, and completes the attempt.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/file_cache.h"
#include "common/input_policy.h"
#include "common/object_store.h"
#include "diablo/v1/worker.grpc.pb.h"
#include "worker/agent/memory_cap.h"
#include "worker/agent/redact.h"
#include "worker/agent/settings.h"
#include "worker/agent/worker_identity.h"

namespace diablo::agent {

class Process;
class Reporter;

class AttemptRunner {
 public:
  // `identity` is the registration the lease came under; every call about
  // the attempt carries it.
  AttemptRunner(const AgentSettings& settings, WorkerIdentity identity,
                v1::WorkerService::Stub& stub, ObjectStore& storage, v1::Lease lease);
  ~AttemptRunner();

  // Blocks until the attempt has ended and been reported.
  void Run();
  // Stops the trainers (SIGTERM, then SIGKILL after the grace period).  When
  // the scheduler cancelled or superseded the attempt there is nothing to
  // report; when this worker is shutting down (`report`), the attempt is
  // completed as failed so that it is retried at once elsewhere.
  void Stop(const std::string& reason, bool report = false);

  int64_t fence() const { return lease_.fence(); }
  const v1::Lease& lease() const { return lease_; }
  bool done() const { return done_.load(); }

 public:
  // How an attempt ended, as CompleteAttempt reports it.
  struct Outcome {
    bool succeeded = false;
    bool permanent = false;
    bool infrastructure = false;  // the worker's failure (shutdown), not the job's
    int exit_code = 0;
    std::string error_code;  // of the failed rank's last error event, if any
    std::string reason;
    std::vector<std::string> stderr_tail;
  };

 private:
  absl::Status Prepare(std::string* config_path);
  absl::Status FetchInput(const v1::Input& input, std::filesystem::path* local);
  // An uploaded input, through the node's input cache (work_dir/cache);
  // one that cannot fit there is fetched into the job directory instead.
  absl::Status FetchUpload(const v1::Input& input, std::filesystem::path* local);
  absl::Status FetchCheckpoint();
  Outcome Train(const std::string& config_path);
  absl::Status StartTrainers(const std::string& config_path, std::vector<Process>* processes);
  void HandleEvent(int rank, const std::string& line, std::string* last_error_code,
                   std::string* last_error);
  absl::Status UploadOutputs(std::vector<v1::UploadedArtifact>* artifacts);
  void Complete(const Outcome& outcome, const std::vector<v1::UploadedArtifact>& artifacts);
  void Log(const std::string& line);

  const AgentSettings& settings_;
  const WorkerIdentity identity_;
  v1::WorkerService::Stub& stub_;
  ObjectStore& storage_;
  const v1::Lease lease_;
  std::filesystem::path job_dir_, output_dir_;
  // Applied to everything of the trainer's that goes to the job's owner (by
  // the reporter, and to the completion); declared before the reporter,
  // which holds it.
  Redactor redactor_{{}, {}};
  // The worker's second look at leased inputs: its work dir and the
  // service's storage are never inputs.
  InputPolicy input_guard_;
  std::unique_ptr<Reporter> reporter_;
  // The cached inputs this attempt uses: no other attempt's fetch evicts
  // them while the attempt lives.
  std::vector<FileCache::Pin> input_pins_;
  // Each trainer's RLIMIT_DATA (0: none), decided in Prepare.
  MemoryCap memory_cap_;

  std::mutex mu_;
  std::vector<pid_t> trainer_pids_;  // process groups to signal on Stop
  std::atomic<bool> stopped_{false};
  std::atomic<bool> report_stop_{false};
  std::string stop_reason_;  // guarded by mu_
  std::atomic<bool> done_{false};
};

}  // namespace diablo::agent
