// Client side of the scheduler's API, shared by diablo-ctl and diablo-worker:
// a channel (plain or TLS, with client certificates for mutual TLS) and call
// contexts that always carry a deadline and the bearer token.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"

namespace diablo {

struct RpcClientOptions {
  std::string server = "127.0.0.1:50051";  // host:port
  std::string token;                       // sent as "authorization: Bearer <token>"
  std::string tls_ca;                      // PEM file: use TLS and trust this CA
  std::string tls_cert, tls_key;           // PEM files: client certificate (mutual TLS)
  double timeout_s = 30;                   // deadline of ordinary calls
};

// INVALID_ARGUMENT for a malformed address or unreadable PEM files.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const RpcClientOptions& options);

// The metadata key a worker's calls carry its credential under (the
// secret RegisterWorker returned; proto/diablo/v1/worker.proto).
inline constexpr char kWorkerCredentialMetadata[] = "diablo-worker-credential";

// A context with the token and a deadline `timeout` from now.
std::unique_ptr<grpc::ClientContext> NewCallContext(const RpcClientOptions& options,
                                                    std::chrono::milliseconds timeout);
inline std::unique_ptr<grpc::ClientContext> NewCallContext(const RpcClientOptions& options) {
  return NewCallContext(options,
                        std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000)));
}

// Worth retrying after a pause: the server is restarting or briefly overloaded.
bool IsTransient(const grpc::Status& status);

}  // namespace diablo
