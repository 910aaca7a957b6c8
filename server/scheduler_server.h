// The scheduler's gRPC server: the store, the services it hosts, their
// limits, the background tick (lease expiry, stall detection, placement) and
// the metrics port.  BuildAndStart opens everything and returns a running
// server, or a status that says what could not be opened and why.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/input_policy.h"
#include "grpcpp/server.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/scheduler.h"
#include "server/submit_checks.h"

namespace diablo {

class SystemServiceImpl;

struct SchedulerOptions {
  // host:port to listen on; port 0 picks a free port (see SchedulerServer::port).
  std::string listen_address = "127.0.0.1:50051";
  // Holds scheduler.db (the SQLite store), scratch space and caches.
  // Required; diablo-scheduler defaults it to DefaultStateDir("scheduler").
  std::string data_dir;
  // Object storage; empty: file://<data_dir>/storage.
  std::string storage_uri;
  // host:port for Prometheus /metrics (a bare port binds loopback); empty:
  // no metrics endpoint.
  std::string metrics_listen;
  // Non-empty: /metrics wants HTTP basic auth with this password.
  std::string metrics_token;
  // Label per-job series with job names too (tenants' free text).
  bool metrics_job_names = false;
  // Object prefixes and local roots each tenant's jobs may read (none by
  // default: uploads only).  The storage and data directory are protected
  // whatever it grants.
  InputPolicy inputs;
  server::SchedulerConfig scheduler;
  server::AuthOptions auth;
  // What a submit may cost: datasets read, tokenizers kept, disk for the
  // copies of models read at submit (under <data_dir>/cache).
  server::SubmitCheckOptions submit_checks;
  // TLS: server certificate and key (PEM); with client_ca, clients (workers)
  // must present a certificate it signed (mutual TLS).
  std::string tls_cert, tls_key, tls_client_ca;
  // Largest request message accepted, in bytes.  Uploads are chunked (1 MiB),
  // so no single message needs to be large.
  int max_receive_message_bytes = 8 << 20;
  // Concurrent streams (calls) per client connection.
  int max_concurrent_streams = 256;
  // Largest metadata (headers) a client may send, in bytes.
  int max_metadata_bytes = 16 << 10;
  // Clients may ping at most this often when keeping idle connections alive.
  absl::Duration min_client_ping_interval = absl::Seconds(10);
  int64_t max_upload_bytes = int64_t{64} << 30;
};

class SchedulerServer {
 public:
  static absl::StatusOr<std::unique_ptr<SchedulerServer>> BuildAndStart(
      const SchedulerOptions& options);
  ~SchedulerServer();

  // The port actually bound (differs from the option when it asked for 0).
  int port() const { return port_; }
  // The metrics port, 0 without one.
  int metrics_port() const;
  server::Scheduler& scheduler() { return *scheduler_; }
  server::Authenticator& authenticator() { return *auth_; }
  // Stops accepting calls and waits up to `grace` for running ones to finish.
  void Shutdown(absl::Duration grace);
  // Blocks until Shutdown() has completed.
  void Wait();

 private:
  struct Services;
  SchedulerServer();

  std::unique_ptr<server::Scheduler> scheduler_;
  std::unique_ptr<server::Authenticator> auth_;
  std::unique_ptr<server::Metrics> metrics_;
  InputPolicy inputs_;  // the options' grants plus the protected storage and data dir
  // The bounds and caches of CreateJob's checks (server/submit_checks.h).
  std::shared_ptr<server::SubmitChecks> submit_checks_;
  std::unique_ptr<SystemServiceImpl> system_service_;
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  std::atomic<bool> stopping_{false};
  std::thread ticker_;
  int port_ = 0;
};

}  // namespace diablo
