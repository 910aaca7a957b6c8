// Channels and call contexts for the scheduler's clients.
#include "common/rpc_client.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/net_address.h"
#include "common/status_macros.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace diablo {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(what, ": cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const RpcClientOptions& options) {
  RETURN_IF_ERROR(ParseHostPort(options.server, "--server").status());
  grpc::ChannelArguments args;
  // Keep idle connections (long polls, watches) alive through NATs and proxies,
  // no more often than the server permits.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetMaxReceiveMessageSize(16 << 20);
  // Reconnect within seconds when the scheduler comes back (a restart must
  // not outlast a worker's lease): gRPC's default backoff grows to minutes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  if (options.tls_ca.empty() && options.tls_cert.empty())
    return grpc::CreateCustomChannel(options.server, grpc::InsecureChannelCredentials(), args);
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(options.tls_ca, "--tls-ca"));
  }
  if (options.tls_cert.empty() != options.tls_key.empty())
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  if (!options.tls_cert.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPem(options.tls_cert, "--tls-cert"));
    ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPem(options.tls_key, "--tls-key"));
  }
  return grpc::CreateCustomChannel(options.server, grpc::SslCredentials(ssl), args);
}

std::unique_ptr<grpc::ClientContext> NewCallContext(const RpcClientOptions& options,
                                                    std::chrono::milliseconds timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + timeout);
  if (!options.token.empty()) context->AddMetadata("authorization", "Bearer " + options.token);
  return context;
}

bool IsTransient(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
         status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
}

}  // namespace diablo
