// Forwards an attempt's trainer events and log lines to the scheduler in
// order, in batches, retrying through scheduler restarts; tells the attempt
// to stop when the scheduler says it was cancelled or superseded.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "diablo/v1/worker.grpc.pb.h"
#include "worker/agent/redact.h"
#include "worker/agent/settings.h"
#include "worker/agent/worker_identity.h"

namespace diablo::agent {

class Reporter {
 public:
  // `on_stop` runs (once) when the scheduler answers that the attempt must stop.
  // Every event and line goes through `redactor` before it is queued: this is
  // where the trainer's text leaves the node.  REQUIRES: it outlives this.
  Reporter(const AgentSettings& settings, const WorkerIdentity& identity,
           v1::WorkerService::Stub& stub, int64_t fence, int rank, const Redactor& redactor,
           std::function<void(const std::string&)> on_stop);
  ~Reporter();

  void Event(std::string json);
  void Log(std::string line);
  // Sends everything queued; gives up after `timeout_s` of failed tries.
  void Flush(double timeout_s);

 private:
  void Loop();
  bool SendBatch();

  const AgentSettings& settings_;
  const WorkerIdentity& identity_;
  v1::WorkerService::Stub& stub_;
  const int64_t fence_;
  const int rank_;
  const Redactor& redactor_;
  std::function<void(const std::string&)> on_stop_;

  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<v1::TrainerReport> queue_;
  int64_t front_seq_ = 1;  // sequence number of queue_.front(); consecutive after it
  bool closing_ = false;
  bool stopped_ = false;
  // Something other than step metrics is queued: send without batching delay.
  bool urgent_ = false;
  std::thread thread_;
};

}  // namespace diablo::agent
