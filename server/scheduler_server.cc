// Assembles the scheduler: store, storage, auth, services, limits, ticker.
#include "server/scheduler_server.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/net_address.h"
#include "common/object_store.h"
#include "common/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/metrics.h"
#include "server/services.h"
#include "server/system_service.h"

namespace diablo {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* flag) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(
    const SchedulerOptions& options) {
  if (options.tls_cert.empty() != options.tls_key.empty())
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  if (options.tls_cert.empty()) {
    if (!options.tls_client_ca.empty())
      return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert");
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl(
      options.tls_client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                    : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ASSIGN_OR_RETURN(std::string cert, ReadPem(options.tls_cert, "--tls-cert"));
  ASSIGN_OR_RETURN(std::string key, ReadPem(options.tls_key, "--tls-key"));
  ssl.pem_key_cert_pairs.push_back({key, cert});
  if (!options.tls_client_ca.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(options.tls_client_ca, "--tls-client-ca"));
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

struct SchedulerServer::Services {
  explicit Services(const server::ServiceContext& context)
      : jobs(context), files(context), workers(context), fleet(context) {}
  server::JobServiceImpl jobs;
  server::FileServiceImpl files;
  server::WorkerServiceImpl workers;
  server::FleetServiceImpl fleet;
};

SchedulerServer::SchedulerServer() = default;

absl::StatusOr<std::unique_ptr<SchedulerServer>> SchedulerServer::BuildAndStart(
    const SchedulerOptions& options) {
  // Validate before gRPC sees the address: its own error is only "failed to bind".
  RETURN_IF_ERROR(ParseHostPort(options.listen_address, "--listen", PortZero::kAllowed).status());
  ASSIGN_OR_RETURN(auto credentials, Credentials(options));

  namespace fs = std::filesystem;
  std::error_code ec;
  if (options.data_dir.empty())
    return absl::InvalidArgumentError("the data directory (--data-dir) is not set");
  const fs::path data_dir = fs::absolute(options.data_dir);
  fs::create_directories(data_dir, ec);
  if (ec)
    return absl::InvalidArgumentError(
        absl::StrCat("--data-dir ", data_dir.string(), ": ", ec.message()));
  const std::string db_path = (data_dir / "scheduler.db").string();

  std::unique_ptr<SchedulerServer> server(new SchedulerServer());
  server::SchedulerConfig config = options.scheduler;
  config.storage_uri = options.storage_uri.empty() ? "file://" + (data_dir / "storage").string()
                                                   : options.storage_uri;
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> storage, OpenObjectStore(config.storage_uri));
  ASSIGN_OR_RETURN(std::unique_ptr<server::Db> db, server::Db::Open(db_path));
  ASSIGN_OR_RETURN(server->scheduler_,
                   server::Scheduler::Open(std::move(db), std::move(storage), config));
  ASSIGN_OR_RETURN(server->auth_, server::Authenticator::Open(db_path, options.auth));
  if (!options.metrics_listen.empty()) {
    server::MetricsOptions metrics{.listen = server::Metrics::ResolveListen(options.metrics_listen),
                                   .data_dir = data_dir.string(),
                                   .token = options.metrics_token,
                                   .job_name_labels = options.metrics_job_names};
    RETURN_IF_ERROR(ParseHostPort(metrics.listen, "--metrics-listen", PortZero::kAllowed).status());
    ASSIGN_OR_RETURN(server->metrics_, server::Metrics::Start(metrics));
  }
  ASSIGN_OR_RETURN(server->submit_checks_,
                   server::SubmitChecks::Open(data_dir / "cache", options.submit_checks));
  server->inputs_ = options.inputs;
  server->inputs_.Protect(config.storage_uri);
  server->inputs_.Protect(data_dir.string());
  server::ServiceContext context{
      server->scheduler_.get(), server->auth_.get(), server->metrics_.get(), data_dir,
      options.max_upload_bytes, &server->inputs_,    server->submit_checks_};
  server->services_ = std::make_unique<Services>(context);
  server->system_service_ = std::make_unique<SystemServiceImpl>(absl::Now());

  // Standard health checking and reflection, so grpc_health_probe, grpcurl and
  // generated clients in any language work against the scheduler.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, credentials, &server->port_);
  builder.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, options.max_metadata_bytes);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      static_cast<int>(absl::ToInt64Milliseconds(options.min_client_ping_interval)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.RegisterService(server->system_service_.get());
  builder.RegisterService(&server->services_->jobs);
  builder.RegisterService(&server->services_->files);
  builder.RegisterService(&server->services_->workers);
  builder.RegisterService(&server->services_->fleet);

  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("could not listen on ", options.listen_address,
                                               ": the port is in use or the address is not local "
                                               "to this machine; pick another with --listen"));
  }
  // Once a second: expire silent workers, fail stalled attempts, place jobs;
  // every five: refresh the metrics gauges.
  server->ticker_ = std::thread([raw = server.get()] {
    for (int tick = 0; !raw->stopping_.load(); ++tick) {
      if (absl::Status status = raw->scheduler_->Tick(); !status.ok())
        std::fprintf(stderr, "diablo-scheduler: tick: %s\n", status.ToString().c_str());
      // Load balancers and probes stop sending work while the store cannot
      // write; the ticker's probe brings it back once the disk has room.
      raw->server_->GetHealthCheckService()->SetServingStatus(raw->scheduler_->store_writable());
      if (raw->metrics_ != nullptr && tick % 5 == 0) raw->metrics_->Refresh(*raw->scheduler_);
      for (int i = 0; i < 10 && !raw->stopping_.load(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  return server;
}

SchedulerServer::~SchedulerServer() {
  if (server_ != nullptr) Shutdown(absl::ZeroDuration());
  stopping_ = true;
  if (ticker_.joinable()) ticker_.join();
}

int SchedulerServer::metrics_port() const { return metrics_ == nullptr ? 0 : metrics_->port(); }

void SchedulerServer::Shutdown(absl::Duration grace) {
  stopping_ = true;
  scheduler_->BeginShutdown();
  server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(grace));
}

void SchedulerServer::Wait() { server_->Wait(); }

}  // namespace diablo
