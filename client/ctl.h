// diablo-ctl's verbs and what they share: the connection options, exit codes
// a script can rely on, output as tables or JSON, and error reporting.
#pragma once

#include <google/protobuf/message.h>

#include <memory>
#include <string>
#include <vector>

#include "common/rpc_client.h"
#include "diablo/v1/file.grpc.pb.h"
#include "diablo/v1/job.grpc.pb.h"
#include "diablo/v1/worker.grpc.pb.h"

namespace diablo::ctl {

// Exit codes (docs/cli.md lists them too).
enum ExitCode {
  kOk = 0,
  kRpcFailed = 1,     // the server refused the call or could not be reached
  kUsage = 2,         // bad flags or a bad local file
  kJobFailed = 3,     // a watched job ended FAILED
  kJobCancelled = 4,  // a watched job ended CANCELLED
  kChecksum = 5,      // a download did not match its checksum
};

struct Options {
  RpcClientOptions rpc;
  bool json = false;  // --output json
};

struct Clients {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::JobService::Stub> jobs;
  std::unique_ptr<v1::FileService::Stub> files;
  std::unique_ptr<v1::FleetService::Stub> fleet;
};
// Exits with kUsage on a malformed address or unreadable TLS files.
Clients Connect(const Options& options);

// Prints "diablo-ctl: <server>: <message>" with a hint for the usual causes.
int ReportRpcError(const Options& options, const grpc::Status& status);
int UsageError(const std::string& message);

// A message as one line of JSON with the .proto's field names.
std::string ToJson(const google::protobuf::Message& message);
std::string StateName(v1::JobState state);  // "running"
std::string Duration(double seconds);       // "1h02m", "3m05s", "12s"

// ---- verbs
struct SubmitArgs {
  std::string config_path;
  std::vector<std::string> overrides;  // --set key=value
  std::string name;
  std::vector<std::string> labels;  // key=value
  int priority = 0, devices = 1, nodes = 1, max_retries = 2;
  std::string idempotency_key;
  bool queue_anyway = false, no_upload = false, wait = false;
};
int Submit(const Options& options, const SubmitArgs& args);
int List(const Options& options, const std::vector<std::string>& states,
         const std::vector<std::string>& labels, int limit);
int Get(const Options& options, const std::string& id);
int Cancel(const Options& options, const std::string& id, const std::string& reason);
// Streams events until the job ends; exit code from its final state.
int Watch(const Options& options, const std::string& id, bool follow_logs_only);
int Logs(const Options& options, const std::string& id, bool follow);
int Download(const Options& options, const std::string& id, const std::string& out_dir,
             const std::string& only);
int FilesUpload(const Options& options, const std::string& path, const std::string& name);
int FilesList(const Options& options);
int FilesRemove(const Options& options, const std::string& id);
int Workers(const Options& options);
int RevokeWorker(const Options& options, const std::string& id, const std::string& reason);
int Version(const Options& options);

// Uploads a local file unless the tenant already has one with the same
// content; returns its id, or the empty string after printing the error.
std::string UploadFile(const Options& options, Clients& clients, const std::string& path,
                       const std::string& name, int* exit_code);

}  // namespace diablo::ctl
