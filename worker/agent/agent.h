// The diablo-worker agent: registers with the scheduler, keeps its lease with
// heartbeats, long-polls for attempts while it has free devices, and runs
// each in an AttemptRunner.  Losing the lease (the scheduler forgot this
// worker) stops every trainer and registers again.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "common/object_store.h"
#include "diablo/v1/worker.grpc.pb.h"
#include "worker/agent/attempt_runner.h"
#include "worker/agent/settings.h"
#include "worker/agent/worker_identity.h"

namespace diablo::agent {

class Agent {
 public:
  explicit Agent(AgentSettings settings);
  ~Agent();

  // Runs until Shutdown(); returns an error for what retrying cannot fix
  // (bad token, bad settings).
  absl::Status Run();
  // Stops leasing and stops the running trainers (their attempts are retried
  // elsewhere).  Safe from a signal-handling thread.
  void Shutdown();

 private:
  absl::Status Register();
  void HeartbeatLoop();
  int FreeSlots();
  bool AnyRunning();
  void ReapFinished();

  AgentSettings settings_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  std::unique_ptr<ObjectStore> storage_;
  // Set by Register(); read by the heartbeat thread and Shutdown() under mu_.
  WorkerIdentity identity_;
  WorkerIdentity Identity();
  double heartbeat_interval_s_ = 5;

  struct Running {
    std::unique_ptr<AttemptRunner> runner;
    std::thread thread;
  };
  std::mutex mu_;
  std::vector<Running> running_;
  std::atomic<bool> shutdown_{false};
  std::atomic<bool> must_register_{false};
  // The scheduler refused this worker for good (revoked, or its token was):
  // Run() stops the trainers and returns this.  Guarded by mu_.
  absl::Status fatal_;
};

}  // namespace diablo::agent
