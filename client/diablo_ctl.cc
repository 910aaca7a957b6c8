// diablo-ctl: talks to a diablo-scheduler over gRPC.  Every call carries a
// deadline; errors print the server's status code and message and exit 1.
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "common/net_address.h"
#include "diablo/build_info.h"
#include "diablo/v1/system.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace {

struct GlobalOptions {
  std::string server = "127.0.0.1:50051";
  double timeout_seconds = 10;
};

std::shared_ptr<grpc::Channel> Connect(const GlobalOptions& options) {
  return grpc::CreateChannel(options.server, grpc::InsecureChannelCredentials());
}

void SetDeadline(grpc::ClientContext& context, const GlobalOptions& options) {
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(
                           static_cast<int64_t>(options.timeout_seconds * 1000)));
}

int ReportRpcError(const GlobalOptions& options, const grpc::Status& status) {
  const char* hint = "";
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    hint = " (is diablo-scheduler running there? set the address with --server)";
  }
  std::fprintf(stderr, "diablo-ctl: %s: %s%s\n", options.server.c_str(),
               status.error_message().c_str(), hint);
  return 1;
}

int RunVersion(const GlobalOptions& options) {
  std::printf("client: diablo-ctl %s (%s)\n", diablo::kVersion, diablo::kGitCommit);
  auto stub = diablo::v1::SystemService::NewStub(Connect(options));
  grpc::ClientContext context;
  SetDeadline(context, options);
  diablo::v1::GetVersionResponse response;
  grpc::Status status = stub->GetVersion(&context, diablo::v1::GetVersionRequest(), &response);
  if (!status.ok()) return ReportRpcError(options, status);
  std::printf("server: diablo-scheduler %s (%s) at %s, up %llds, APIs:", response.version().c_str(),
              response.git_commit().c_str(), options.server.c_str(),
              static_cast<long long>(response.uptime_seconds()));
  for (const auto& api : response.api_versions()) std::printf(" %s", api.c_str());
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  GlobalOptions options;
  CLI::App app{
      "diablo-ctl: submit and watch DiaBlo fine-tuning jobs on a diablo-scheduler.\n\n"
      "Example:\n"
      "  diablo-ctl --server 127.0.0.1:50051 version"};
  app.set_version_flag("--client-version", std::string("diablo-ctl ") + diablo::kVersion);
  app.add_option("--server", options.server, "Scheduler address, host:port")
      ->envname("DIABLO_SERVER")
      ->capture_default_str();
  app.add_option("--timeout", options.timeout_seconds, "Deadline for each call, in seconds")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  app.require_subcommand(1);
  auto* version = app.add_subcommand("version", "Print client and server versions");
  CLI11_PARSE(app, argc, argv);

  auto address = diablo::ParseHostPort(options.server, "--server");
  if (!address.ok()) {
    std::fprintf(stderr, "diablo-ctl: %s\n", std::string(address.status().message()).c_str());
    return 2;
  }
  if (version->parsed()) return RunVersion(options);
  return 2;
}
