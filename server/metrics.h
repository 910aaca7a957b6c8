// Prometheus metrics of the scheduler, served on their own port (/metrics):
// jobs by state, queue wait, job duration, workers alive, progress of each
// running job, and API requests and latencies by method and status code.
// The full list, with types and labels, is in docs/service.md.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "grpcpp/support/status.h"
#include "server/scheduler.h"

namespace diablo::server {

struct MetricsOptions {
  // "host:port" (port 0 picks one); a bare "port" or ":port" binds loopback
  // only: serving every interface must be asked for (0.0.0.0:port).
  std::string listen;
  // Reports the free space of the filesystem holding it (the SQLite store).
  std::string data_dir;
  // Non-empty: scrapes must authenticate with HTTP basic auth whose password
  // is this token (any user name).
  std::string token;
  // Label running jobs' series with their names as well as their ids.
  // Names are free text chosen by tenants; off unless the operator opts in.
  bool job_name_labels = false;
};

class Metrics {
 public:
  static absl::StatusOr<std::unique_ptr<Metrics>> Start(const MetricsOptions& options);
  ~Metrics();

  int port() const;
  // "host:port" with a loopback host where `listen` names none.
  static std::string ResolveListen(std::string_view listen);
  // One finished API call.
  void ObserveCall(const std::string& method, grpc::StatusCode code, double seconds);
  // Refreshes the gauges from the store (the server calls it every few seconds).
  void Refresh(Scheduler& scheduler);
  // A job reached a final state: its queue wait and duration.
  void ObserveJobTimes(double queue_wait_s, double duration_s);

 private:
  struct Impl;
  explicit Metrics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Measures one call and reports it when it goes out of scope.
class CallTimer {
 public:
  CallTimer(Metrics* metrics, const char* method);
  ~CallTimer();
  // The status the call returns (pass-through, so `return timer.Done(s);`).
  grpc::Status Done(grpc::Status status);

 private:
  Metrics* metrics_;
  const char* method_;
  double start_;
  grpc::StatusCode code_ = grpc::StatusCode::OK;
};

}  // namespace diablo::server
