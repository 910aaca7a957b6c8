// Shared plumbing of diablo-ctl.
#include <google/protobuf/util/json_util.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "client/ctl.h"

namespace diablo::ctl {

Clients Connect(const Options& options) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(options.rpc);
  if (!channel.ok()) std::exit(UsageError(std::string(channel.status().message())));
  Clients clients;
  clients.channel = *channel;
  clients.jobs = v1::JobService::NewStub(clients.channel);
  clients.files = v1::FileService::NewStub(clients.channel);
  clients.fleet = v1::FleetService::NewStub(clients.channel);
  return clients;
}

int ReportRpcError(const Options& options, const grpc::Status& status) {
  std::string hint;
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      hint = " (is diablo-scheduler running there? set the address with --server or DIABLO_SERVER)";
      break;
    case grpc::StatusCode::UNAUTHENTICATED:
      hint = " (pass a token with --token or DIABLO_TOKEN)";
      break;
    default:
      break;
  }
  std::fprintf(stderr, "diablo-ctl: %s: %s%s\n", options.rpc.server.c_str(),
               status.error_message().c_str(), hint.c_str());
  return kRpcFailed;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "diablo-ctl: %s\n", message.c_str());
  return kUsage;
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(message, &json, print);
  return json;
}

std::string StateName(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  if (name.rfind("JOB_STATE_", 0) == 0) name = name.substr(10);
  return absl::AsciiStrToLower(name);
}

std::string Duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

}  // namespace diablo::ctl
