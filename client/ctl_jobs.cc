// diablo-ctl submit, list, get, cancel, workers (and workers revoke) and version.
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/ctl.h"
#include "diablo/build_info.h"
#include "diablo/v1/system.grpc.pb.h"
#include "spec/train_config.h"

namespace diablo::ctl {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kInputFields[][2] = {
    {"model", nullptr}, {"data", "train"}, {"data", "eval"}, {"init_adapter", nullptr}};

std::string RandomKey() {
  std::random_device device;
  return absl::StrFormat("ctl-%08x%08x%08x", device(), device(), device());
}

// Replaces local files named by the spec with uploads (deduplicated by
// content), so a config written for `diablo train` submits unchanged.
int UploadLocalInputs(const Options& options, Clients& clients, const fs::path& base, json& doc) {
  for (const auto& [section, key] : kInputFields) {
    json* node = &doc;
    if (key != nullptr) {
      if (!doc.contains(section) || !doc[section].is_object()) continue;
      node = &doc[section];
    }
    const std::string field = key != nullptr ? key : section;
    if (!node->contains(field) || !(*node)[field].is_string()) continue;
    const std::string value = (*node)[field].get<std::string>();
    if (value.empty() || value.find("://") != std::string::npos) continue;
    fs::path path = value;
    if (path.is_relative()) path = base / path;
    std::error_code ec;
    if (fs::is_regular_file(path, ec)) {
      int code = kOk;
      const std::string id =
          UploadFile(options, clients, path.string(), path.filename().string(), &code);
      if (id.empty()) return code;
      (*node)[field] = "upload://" + id;
    } else if (!fs::path(value).is_absolute()) {
      return UsageError(
          absl::StrCat(key != nullptr ? absl::StrCat(section, ".", key) : section, ": ", value,
                       " is not a file here (relative paths are uploaded; directories must be on "
                       "storage the workers share, given as an absolute path or an s3:// URI)"));
    }
  }
  return kOk;
}

void PrintJob(const v1::Job& job) {
  std::printf("id:          %s\n", job.id().c_str());
  std::printf("name:        %s\n", job.name().c_str());
  std::printf("state:       %s\n", StateName(job.state()).c_str());
  if (!job.reason().empty()) std::printf("reason:      %s\n", job.reason().c_str());
  std::printf("attempts:    %d (max retries %d)\n", job.attempts(), job.max_retries());
  if (job.total_steps() > 0)
    std::printf("progress:    step %lld/%lld, loss %.4f, %.0f tokens/s, ETA %s\n",
                static_cast<long long>(job.step()), static_cast<long long>(job.total_steps()),
                job.loss(), job.tokens_per_s(), Duration(job.eta_s()).c_str());
  if (job.checkpoint_step() > 0)
    std::printf("checkpoint:  step %lld\n", static_cast<long long>(job.checkpoint_step()));
  std::printf("placement:   %d node(s) x %d device(s), priority %d", job.nodes(),
              job.devices_per_node(), job.priority());
  for (int i = 0; i < job.workers_size(); ++i)
    std::printf("%s%s", i == 0 ? ", on " : ", ", job.workers(i).c_str());
  std::printf("\n");
  std::printf("estimate:    %.2f GiB per rank\n",
              static_cast<double>(job.estimated_bytes()) / (1 << 30));
  for (const auto& [key, value] : job.labels())
    std::printf("label:       %s=%s\n", key.c_str(), value.c_str());
  std::printf("model:       %s\n", job.spec().model().c_str());
  std::printf("method:      %s\n",
              job.spec().method().has_name() ? job.spec().method().name().c_str() : "diablo");
}

}  // namespace

int Submit(const Options& options, const SubmitArgs& args) {
  json doc;
  try {
    doc = train::ReadConfigDocument(args.config_path, args.overrides);
  } catch (const std::exception& e) {
    return UsageError(e.what());
  }
  if (doc.contains("output_dir")) {
    std::fprintf(
        stderr,
        "diablo-ctl: note: output_dir is ignored by the service (download the adapter instead)\n");
    doc.erase("output_dir");
  }
  Clients clients = Connect(options);
  if (!args.no_upload) {
    if (int code =
            UploadLocalInputs(options, clients, fs::path(args.config_path).parent_path(), doc);
        code != kOk)
      return code;
  }
  v1::CreateJobRequest request;
  google::protobuf::util::JsonParseOptions parse;
  if (auto status =
          google::protobuf::util::JsonStringToMessage(doc.dump(), request.mutable_spec(), parse);
      !status.ok())
    return UsageError(absl::StrCat(args.config_path, ": ", std::string(status.message())));
  request.set_name(args.name.empty() ? fs::path(args.config_path).stem().string() : args.name);
  for (const std::string& label : args.labels) {
    const size_t eq = label.find('=');
    if (eq == std::string::npos || eq == 0)
      return UsageError(absl::StrCat("--label ", label, ": expected key=value"));
    (*request.mutable_labels())[label.substr(0, eq)] = label.substr(eq + 1);
  }
  request.set_priority(args.priority);
  request.set_devices_per_node(args.devices);
  request.set_nodes(args.nodes);
  request.set_max_retries(args.max_retries);
  request.set_queue_anyway(args.queue_anyway);
  // A retried submit must not create a second job: one key per invocation.
  request.set_idempotency_key(args.idempotency_key.empty() ? RandomKey() : args.idempotency_key);
  v1::Job job;
  grpc::Status status;
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto context = NewCallContext(options.rpc);
    status = clients.jobs->CreateJob(context.get(), request, &job);
    if (status.ok() || status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    std::this_thread::sleep_for(std::chrono::seconds(1 << attempt));
  }
  if (!status.ok()) return ReportRpcError(options, status);
  if (options.json) {
    std::printf("%s\n", ToJson(job).c_str());
  } else {
    std::printf("%s\n", job.id().c_str());
    std::fprintf(stderr, "submitted %s (%s): %s\n", job.id().c_str(), job.name().c_str(),
                 job.reason().c_str());
  }
  std::fflush(stdout);
  return args.wait ? Watch(options, job.id(), false) : kOk;
}

int List(const Options& options, const std::vector<std::string>& states,
         const std::vector<std::string>& labels, int limit) {
  v1::ListJobsRequest request;
  for (const std::string& state : states) {
    v1::JobState value;
    if (!v1::JobState_Parse("JOB_STATE_" + absl::AsciiStrToUpper(state), &value) || value == 0)
      return UsageError(
          absl::StrCat("--state ", state,
                       ": expected queued, assigned, running, succeeded, failed or cancelled"));
    request.add_states(value);
  }
  for (const std::string& label : labels) {
    const size_t eq = label.find('=');
    if (eq == std::string::npos)
      return UsageError(absl::StrCat("--label ", label, ": expected key=value"));
    (*request.mutable_labels())[label.substr(0, eq)] = label.substr(eq + 1);
  }
  Clients clients = Connect(options);
  v1::ListJobsResponse all;
  do {
    request.set_page_size(std::min(limit - all.jobs_size(), 500));
    v1::ListJobsResponse page;
    auto context = NewCallContext(options.rpc);
    grpc::Status status = clients.jobs->ListJobs(context.get(), request, &page);
    if (!status.ok()) return ReportRpcError(options, status);
    for (v1::Job& job : *page.mutable_jobs()) *all.add_jobs() = std::move(job);
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty() && all.jobs_size() < limit);
  if (options.json) {
    std::printf("%s\n", ToJson(all).c_str());
    return kOk;
  }
  std::printf("%-20s %-24s %-10s %-12s %-8s %s\n", "ID", "NAME", "STATE", "STEP", "LOSS", "AGE");
  const double now = static_cast<double>(std::time(nullptr));
  for (const v1::Job& job : all.jobs()) {
    const std::string step =
        job.total_steps() > 0 ? absl::StrCat(job.step(), "/", job.total_steps()) : "-";
    const std::string loss = job.step() > 0 ? absl::StrFormat("%.4f", job.loss()) : "-";
    std::printf("%-20s %-24s %-10s %-12s %-8s %s\n", job.id().c_str(),
                job.name().substr(0, 24).c_str(), StateName(job.state()).c_str(), step.c_str(),
                loss.c_str(), Duration(now - static_cast<double>(job.created_at())).c_str());
  }
  return kOk;
}

int Get(const Options& options, const std::string& id) {
  Clients clients = Connect(options);
  v1::GetJobRequest request;
  request.set_id(id);
  v1::Job job;
  auto context = NewCallContext(options.rpc);
  grpc::Status status = clients.jobs->GetJob(context.get(), request, &job);
  if (!status.ok()) return ReportRpcError(options, status);
  if (options.json) {
    std::printf("%s\n", ToJson(job).c_str());
  } else {
    PrintJob(job);
  }
  return kOk;
}

int Cancel(const Options& options, const std::string& id, const std::string& reason) {
  Clients clients = Connect(options);
  v1::CancelJobRequest request;
  request.set_id(id);
  request.set_reason(reason);
  v1::Job job;
  auto context = NewCallContext(options.rpc);
  grpc::Status status = clients.jobs->CancelJob(context.get(), request, &job);
  if (!status.ok()) return ReportRpcError(options, status);
  if (options.json) {
    std::printf("%s\n", ToJson(job).c_str());
  } else {
    std::printf("%s %s: %s\n", job.id().c_str(), StateName(job.state()).c_str(),
                job.reason().c_str());
  }
  return kOk;
}

int Workers(const Options& options) {
  Clients clients = Connect(options);
  v1::ListWorkersResponse response;
  auto context = NewCallContext(options.rpc);
  grpc::Status status =
      clients.fleet->ListWorkers(context.get(), v1::ListWorkersRequest(), &response);
  if (!status.ok()) return ReportRpcError(options, status);
  if (options.json) {
    std::printf("%s\n", ToJson(response).c_str());
    return kOk;
  }
  std::printf("%-20s %-16s %-16s %-6s %-8s %-10s %s\n", "ID", "NAME", "HOST", "KIND", "DEVICES",
              "STATUS", "JOBS");
  for (const v1::WorkerInfo& w : response.workers()) {
    std::string jobs;
    for (const std::string& job : w.running_jobs())
      absl::StrAppend(&jobs, jobs.empty() ? "" : ",", job);
    if (w.other_jobs() > 0)
      absl::StrAppend(&jobs, jobs.empty() ? "" : ",", w.other_jobs(), " of other tenants");
    std::printf("%-20s %-16s %-16s %-6s %-8d %-10s %s\n", w.id().c_str(), w.name().c_str(),
                w.host().c_str(), w.device_kind().c_str(), w.devices(), w.status().c_str(),
                jobs.empty() ? "-" : jobs.c_str());
  }
  return kOk;
}

int RevokeWorker(const Options& options, const std::string& id, const std::string& reason) {
  Clients clients = Connect(options);
  v1::RevokeWorkerRequest request;
  request.set_worker_id(id);
  request.set_reason(reason);
  v1::RevokeWorkerResponse response;
  auto context = NewCallContext(options.rpc);
  grpc::Status status = clients.fleet->RevokeWorker(context.get(), request, &response);
  if (!status.ok()) return ReportRpcError(options, status);
  if (options.json) {
    std::printf("%s\n", ToJson(response).c_str());
    return kOk;
  }
  const v1::WorkerInfo& w = response.worker();
  std::printf(
      "revoked worker %s (%s on %s); its attempts are retried elsewhere.\n"
      "It registered with token %s, which may not register \"%s\" again; to shut the node out,\n"
      "run: diablo-scheduler token revoke %s\n",
      w.id().c_str(), w.name().c_str(), w.host().c_str(),
      w.token_id().empty() ? "(none recorded)" : w.token_id().c_str(), w.name().c_str(),
      w.token_id().empty() ? "<token id>" : w.token_id().c_str());
  return kOk;
}

int Version(const Options& options) {
  if (!options.json) std::printf("client: diablo-ctl %s (%s)\n", kVersion, kGitCommit);
  Clients clients = Connect(options);
  auto stub = v1::SystemService::NewStub(clients.channel);
  auto context = NewCallContext(options.rpc);
  v1::GetVersionResponse response;
  grpc::Status status = stub->GetVersion(context.get(), v1::GetVersionRequest(), &response);
  if (!status.ok()) return ReportRpcError(options, status);
  if (options.json) {
    std::printf("{\"client\":{\"version\":\"%s\",\"git_commit\":\"%s\"},\"server\":%s}\n", kVersion,
                kGitCommit, ToJson(response).c_str());
    return kOk;
  }
  std::printf("server: diablo-scheduler %s (%s) at %s, up %llds, APIs:", response.version().c_str(),
              response.git_commit().c_str(), options.rpc.server.c_str(),
              static_cast<long long>(response.uptime_seconds()));
  for (const auto& api : response.api_versions()) std::printf(" %s", api.c_str());
  std::printf("\n");
  return kOk;
}

}  // namespace diablo::ctl
