// The scheduler's gRPC server: which services it hosts, with which limits.
// BuildAndStart binds the port and returns a running server or a status that
// says why it could not (port in use, bad address).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"

namespace diablo {

class SystemServiceImpl;

struct SchedulerOptions {
  // host:port to listen on; port 0 picks a free port (see SchedulerServer::port).
  std::string listen_address = "127.0.0.1:50051";
  // Largest request message accepted, in bytes.  Dataset uploads are chunked,
  // so no single message needs to be large.
  int max_receive_message_bytes = 8 << 20;
  // Concurrent streams (calls) per client connection.
  int max_concurrent_streams = 256;
  // Largest metadata (headers) a client may send, in bytes.
  int max_metadata_bytes = 16 << 10;
  // Clients may ping at most this often when keeping idle connections alive.
  absl::Duration min_client_ping_interval = absl::Seconds(10);
};

class SchedulerServer {
 public:
  static absl::StatusOr<std::unique_ptr<SchedulerServer>> BuildAndStart(
      const SchedulerOptions& options);
  ~SchedulerServer();

  // The port actually bound (differs from the option when it asked for 0).
  int port() const { return port_; }
  // Stops accepting calls and waits up to `grace` for running ones to finish.
  void Shutdown(absl::Duration grace);
  // Blocks until Shutdown() has completed.
  void Wait();

 private:
  SchedulerServer() = default;

  std::unique_ptr<SystemServiceImpl> system_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace diablo
