#include "server/scheduler_server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/net_address.h"
#include "common/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"
#include "server/system_service.h"

namespace diablo {

absl::StatusOr<std::unique_ptr<SchedulerServer>> SchedulerServer::BuildAndStart(
    const SchedulerOptions& options) {
  // Validate before gRPC sees the address: its own error is only "failed to bind".
  RETURN_IF_ERROR(ParseHostPort(options.listen_address, "--listen", PortZero::kAllowed).status());

  // Standard health checking and reflection, so grpc_health_probe, grpcurl and
  // generated clients in any language work against the scheduler.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<SchedulerServer> server(new SchedulerServer());
  server->system_service_ = std::make_unique<SystemServiceImpl>(absl::Now());

  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(),
                           &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, options.max_metadata_bytes);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(
                                 options.min_client_ping_interval)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.RegisterService(server->system_service_.get());

  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "could not listen on ", options.listen_address,
        ": the port is in use or the address is not local to this machine; "
        "pick another with --listen"));
  }
  return server;
}

SchedulerServer::~SchedulerServer() {
  if (server_ != nullptr) Shutdown(absl::ZeroDuration());
}

void SchedulerServer::Shutdown(absl::Duration grace) {
  server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(grace));
}

void SchedulerServer::Wait() { server_->Wait(); }

}  // namespace diablo
