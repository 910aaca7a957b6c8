// One attempt on this node, from fetching inputs to CompleteAttempt.
#include "worker/agent/attempt_runner.h"

#include <signal.h>

#include <chrono>
#include <deque>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/input_policy.h"
#include "common/rpc_client.h"
#include "common/safe_name.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "spec/gang_stop_policy.h"
#include "spec/trainer_events.h"
#include "worker/agent/process.h"
#include "worker/agent/reporter.h"
#include "worker/agent/trainer_env.h"

extern char** environ;  // the agent's own environment (unistd.h)

namespace diablo::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr size_t kStderrTail = 30;
// Trainer stderr lines forwarded as log events per attempt (the rest only
// reach the tail kept for a failure report).
constexpr int kForwardedStderrLines = 200;

json* FieldOf(json& doc, const std::string& dotted) {
  json* node = &doc;
  for (absl::string_view part : absl::StrSplit(dotted, '.')) {
    const std::string key(part);
    if (!node->is_object()) return nullptr;
    node = &(*node)[key];
  }
  return node;
}

// The attempt's outcome from its ranks' exit codes and last error events:
// the first rank that failed decides, permanent when its error code says so.
void JudgeExits(int first_rank, const std::vector<int>& codes,
                const std::vector<std::string>& error_codes, const std::vector<std::string>& errors,
                AttemptRunner::Outcome* outcome) {
  outcome->succeeded = true;
  for (size_t i = 0; i < codes.size(); ++i) {
    if (codes[i] == 0) continue;
    outcome->succeeded = false;
    outcome->exit_code = codes[i];
    const int rank = first_rank + static_cast<int>(i);
    outcome->reason = codes[i] < 0
                          ? absl::StrCat("trainer rank ", rank, " was killed by signal ", -codes[i])
                          : absl::StrCat("trainer rank ", rank, " exited with code ", codes[i]);
    if (!error_codes[i].empty()) {
      outcome->error_code = error_codes[i];
      absl::StrAppend(&outcome->reason, " (", error_codes[i], ": ", errors[i], ")");
      outcome->permanent = events::IsPermanent(events::ParseErrorCode(error_codes[i]));
    }
    break;
  }
}

// Waits for this node's ranks, stopping the others when one fails
// (spec/gang_stop_policy.h).  Reaping and signalling happen in this one
// thread, so a signal never reaches a reaped (and perhaps reused) process id.
std::vector<int> WaitForRanks(std::vector<Process>& processes, double grace_s) {
  if (processes.size() == 1) return {processes[0].Wait()};
  std::vector<int> codes(processes.size());
  events::GangStopPolicy gang(processes.size(),
                              std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000)));
  auto signal_running = [&](int signal) {
    for (size_t i = 0; i < processes.size(); ++i)
      if (gang.running(i)) processes[i].Signal(signal);
  };
  while (gang.remaining() > 0) {
    bool reaped = false;
    for (size_t i = 0; i < processes.size(); ++i) {
      if (!gang.running(i)) continue;
      const std::optional<int> code = processes[i].TryWait();
      if (!code) continue;
      codes[i] = *code;
      reaped = true;
      if (gang.Exited(i, *code)) signal_running(SIGTERM);
    }
    if (gang.KillDue()) signal_running(SIGKILL);
    if (!reaped && gang.remaining() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return codes;
}

}  // namespace

AttemptRunner::AttemptRunner(const AgentSettings& settings, WorkerIdentity identity,
                             v1::WorkerService::Stub& stub, ObjectStore& storage, v1::Lease lease)
    : settings_(settings),
      identity_(std::move(identity)),
      stub_(stub),
      storage_(storage),
      lease_(std::move(lease)) {
  job_dir_ =
      settings_.work_dir / "jobs" /
      absl::StrCat(lease_.job_id(), "-attempt-", lease_.attempt(), "-rank-", lease_.first_rank());
  output_dir_ = job_dir_ / "output";
  redactor_ = Redactor(Redactor::SecretsOf(environ, {settings_.rpc.token, identity_.credential}),
                       {{settings_.work_dir.string(), "work-dir"}, {job_dir_.string(), "job"}});
  input_guard_.Protect(storage_.uri());
  input_guard_.Protect(settings_.work_dir.string());
  reporter_ =
      std::make_unique<Reporter>(settings_, identity_, stub_, lease_.fence(), lease_.first_rank(),
                                 redactor_, [this](const std::string& reason) { Stop(reason); });
}

AttemptRunner::~AttemptRunner() = default;

void AttemptRunner::Log(const std::string& line) {
  reporter_->Log(absl::StrCat("[", settings_.name, "] ", line));
}

void AttemptRunner::Stop(const std::string& reason, bool report) {
  if (stopped_.exchange(true)) return;
  report_stop_ = report;
  std::vector<pid_t> pids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pids = trainer_pids_;
    stop_reason_ = reason;
  }
  std::fprintf(stderr, "diablo-worker: stopping job %s attempt %d: %s\n", lease_.job_id().c_str(),
               lease_.attempt(), reason.c_str());
  for (pid_t pid : pids) kill(-pid, SIGTERM);
  // Escalate if the trainers do not leave within the grace period.
  std::thread([pids, grace = report ? settings_.shutdown_grace_s : settings_.kill_grace_s] {
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(grace * 1000)));
    for (pid_t pid : pids) kill(-pid, SIGKILL);
  }).detach();
}

absl::Status AttemptRunner::FetchInput(const v1::Input& input, fs::path* local) {
  // The scheduler checked this input against the tenant's grants; a second
  // look here keeps a wrong or forged lease from reading this worker's own
  // files or the service's storage.
  if (!input.path().empty())
    RETURN_IF_ERROR(input_guard_.CheckNotProtected(input.field(), input.path()));
  else if (!input.key().empty())
    RETURN_IF_ERROR(CheckUploadKey(input.field(), input.key()));
  else
    RETURN_IF_ERROR(input_guard_.CheckNotProtected(input.field(), input.uri()));
  if (!input.path().empty()) {
    *local = input.path().rfind("file://", 0) == 0 ? input.path().substr(7) : input.path();
    return absl::OkStatus();
  }
  const std::string name = input.name().empty() ? "input" : input.name();
  if (!input.key().empty()) return FetchUpload(input, local);
  ASSIGN_OR_RETURN(ObjectUri uri, SplitObjectUri(input.uri()));
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> store, OpenObjectStore(uri.store_uri));
  const fs::path target = job_dir_ / "inputs" / input.field() / name;
  if ((*store).Stat(uri.key).ok()) {
    RETURN_IF_ERROR(store->GetFile(uri.key, target));
  } else {
    RETURN_IF_ERROR(GetDirectory(*store, uri.key, target));  // a model directory
  }
  *local = target;
  return absl::OkStatus();
}

absl::Status AttemptRunner::FetchUpload(const v1::Input& input, fs::path* local) {
  const std::string name = input.name().empty() ? "input" : input.name();
  // The lease's name becomes a path: the same rules as the scheduler's.
  RETURN_IF_ERROR(ValidateRelativePath(name, absl::StrCat(input.field(), ": the input's name")));
  // Uploaded files are immutable: cache them by checksum across attempts
  // (by their key when the lease gives none).  The scheduler only stores
  // checksums it computed, so anything but lower-case hex is a forged lease.
  const bool has_sha256 = !input.sha256().empty();
  if (has_sha256 && (input.sha256().size() != 64 ||
                     input.sha256().find_first_not_of("0123456789abcdef") != std::string::npos))
    return absl::InvalidArgumentError(
        absl::StrCat(input.field(), ": the lease's SHA-256 is not 64 lower-case hex digits"));
  const std::string entry = absl::StrCat(has_sha256 ? input.sha256() : input.key(), "/", name);
  FileCache::Source source{
      [&]() -> absl::StatusOr<int64_t> {
        ASSIGN_OR_RETURN(ObjectInfo info, storage_.Stat(input.key()));
        return info.size_bytes;
      },
      [&](const fs::path& target) { return storage_.GetFile(input.key(), target); }};
  ASSIGN_OR_RETURN(std::shared_ptr<FileCache> cache,
                   FileCache::Shared(settings_.work_dir / "cache", settings_.cache_max_bytes));
  absl::StatusOr<FileCache::Pin> pin = cache->Get(entry, has_sha256 ? input.sha256() : "", source);
  if (pin.ok()) {
    *local = pin->path();
    input_pins_.push_back(std::move(*pin));
    return absl::OkStatus();
  }
  if (pin.status().code() != absl::StatusCode::kResourceExhausted) return pin.status();
  // Too large for the cache, or the files other attempts use leave no room:
  // a copy for this attempt alone, deleted with its job directory.
  Log(absl::StrCat(input.field(), ": ", pin.status().message(),
                   "; fetching it for this attempt only (raise --cache-max-bytes to keep it)"));
  const fs::path target = job_dir_ / "inputs" / input.field() / name;
  RETURN_IF_ERROR(storage_.GetFile(input.key(), target));
  if (has_sha256) {
    ASSIGN_OR_RETURN(std::string digest, Sha256OfFile(target));
    if (digest != input.sha256())
      return absl::DataLossError(absl::StrCat("fetched ", input.key(), " has SHA-256 ", digest,
                                              ", expected ", input.sha256()));
  }
  *local = target;
  return absl::OkStatus();
}

absl::Status AttemptRunner::FetchCheckpoint() {
  if (lease_.resume_key().empty()) return absl::OkStatus();
  const std::string name = lease_.resume_key().substr(lease_.resume_key().rfind('/') + 1);
  const fs::path dir = output_dir_ / "checkpoints" / name;
  RETURN_IF_ERROR(GetDirectory(storage_, lease_.resume_key(), dir));
  std::ofstream(output_dir_ / "checkpoints" / "latest") << name << "\n";
  Log(absl::StrCat("resuming from checkpoint ", name, " (step ", lease_.resume_step(), ")"));
  return absl::OkStatus();
}

absl::Status AttemptRunner::Prepare(std::string* config_path) {
  std::error_code ec;
  fs::remove_all(job_dir_, ec);
  fs::create_directories(output_dir_, ec);
  if (ec)
    return absl::InternalError(
        absl::StrCat("cannot create ", output_dir_.string(), ": ", ec.message()));
  json config = json::parse(lease_.config_json(), nullptr, false);
  if (!config.is_object())
    return absl::InvalidArgumentError("the lease's config is not a JSON object");
  for (const v1::Input& input : lease_.inputs()) {
    fs::path local;
    absl::Status fetched = FetchInput(input, &local);
    if (!fetched.ok())
      return absl::Status(fetched.code(),
                          absl::StrCat("fetching ", input.field(), ": ", fetched.message()));
    if (json* field = FieldOf(config, input.field())) *field = local.string();
  }
  config["output_dir"] = output_dir_.string();
  RETURN_IF_ERROR(FetchCheckpoint());
  // From the fetched inputs: the job's own model and config, whatever the
  // scheduler could or could not estimate at submit.
  memory_cap_ = DecideMemoryCap(settings_.trainer_memory_cap, settings_.trainer_memory_headroom,
                                settings_.devices > 0, config, lease_.world_size());
  std::fprintf(stderr, "diablo-worker: job %s attempt %d: %s\n", lease_.job_id().c_str(),
               lease_.attempt(), memory_cap_.explanation.c_str());
  Log(memory_cap_.explanation);
  *config_path = (job_dir_ / "config.json").string();
  std::ofstream(*config_path) << config.dump(2) << "\n";
  return absl::OkStatus();
}

void AttemptRunner::HandleEvent(int rank, const std::string& line, std::string* last_error_code,
                                std::string* last_error) {
  json event = json::parse(line, nullptr, false);
  if (!event.is_object()) {
    reporter_->Log(line);
    return;
  }
  const std::optional<events::Kind> kind =
      events::ParseKind(event.value(events::field::kEvent, ""));
  if (kind == events::Kind::kError) {
    *last_error_code = event.value(events::field::kCode, "failed");
    *last_error = event.value(events::field::kMessage, "");
  }
  if (rank != 0) {
    if (kind == events::Kind::kError)
      reporter_->Log(absl::StrCat("rank ", rank, ": ", *last_error_code, ": ", *last_error));
    return;
  }
  if (kind == events::Kind::kCheckpoint && event.contains(events::field::kPath)) {
    const fs::path dir = event.value(events::field::kPath, "");
    const std::string key =
        absl::StrCat(lease_.output_prefix(), "/checkpoints/", dir.filename().string());
    absl::Status uploaded = PutDirectory(storage_, key, dir);
    if (uploaded.ok()) {
      event[events::field::kKey] = key;  // only now may the scheduler name it as the latest
    } else {
      Log(absl::StrCat("checkpoint upload failed (the attempt continues): ", uploaded.message()));
    }
  }
  reporter_->Event(event.dump());
}

// One `diablo train` per local rank, with the torchrun environment.
absl::Status AttemptRunner::StartTrainers(const std::string& config_path,
                                          std::vector<Process>* processes) {
  for (int i = 0; i < lease_.local_ranks(); ++i) {
    std::vector<std::string> argv = {settings_.diablo_binary, "train", config_path, "--events"};
    if (!lease_.resume_key().empty()) argv.push_back("--resume");
    const std::map<std::string, std::string> torchrun = {
        {"RANK", std::to_string(lease_.first_rank() + i)},
        {"LOCAL_RANK", std::to_string(i)},
        {"LOCAL_WORLD_SIZE", std::to_string(lease_.local_ranks())},
        {"WORLD_SIZE", std::to_string(lease_.world_size())},
        {"MASTER_ADDR", lease_.master_addr()},
        {"MASTER_PORT", std::to_string(lease_.master_port())},
    };
    absl::StatusOr<Process> process = Process::Start(argv, TrainerEnvironment(environ, torchrun),
                                                     job_dir_.string(), memory_cap_.bytes);
    if (!process.ok())
      return absl::Status(
          process.status().code(),
          absl::StrCat("cannot start ", settings_.diablo_binary, ": ", process.status().message()));
    {
      std::lock_guard<std::mutex> lock(mu_);
      trainer_pids_.push_back(process->pid());
    }
    processes->push_back(std::move(*process));
  }
  return absl::OkStatus();
}

AttemptRunner::Outcome AttemptRunner::Train(const std::string& config_path) {
  Outcome outcome;
  std::vector<Process> processes;
  if (absl::Status started = StartTrainers(config_path, &processes); !started.ok()) {
    outcome.reason = std::string(started.message());
    return outcome;
  }
  if (stopped_) {  // a Stop() that raced the start found no trainers to signal
    for (Process& process : processes) process.Signal(SIGKILL);
  }

  std::mutex tail_mu;
  std::deque<std::string> tail;
  std::vector<std::string> error_codes(processes.size()), errors(processes.size());
  std::vector<std::thread> readers;
  int forwarded = 0;
  for (size_t i = 0; i < processes.size(); ++i) {
    const int rank = lease_.first_rank() + static_cast<int>(i);
    readers.emplace_back([&, i, rank] {
      LineReader reader(processes[i].stdout_fd());
      std::string line;
      while (reader.Next(&line)) HandleEvent(rank, line, &error_codes[i], &errors[i]);
    });
    readers.emplace_back([&, i, rank] {
      LineReader reader(processes[i].stderr_fd());
      std::string line;
      while (reader.Next(&line)) {
        std::lock_guard<std::mutex> lock(tail_mu);
        tail.push_back(processes.size() > 1 ? absl::StrCat("rank ", rank, ": ", line) : line);
        if (tail.size() > kStderrTail) tail.pop_front();
        if (forwarded++ < kForwardedStderrLines) reporter_->Log(tail.back());
      }
    });
  }
  const std::vector<int> codes = WaitForRanks(processes, settings_.kill_grace_s);
  for (std::thread& reader : readers) reader.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    trainer_pids_.clear();
  }
  outcome.stderr_tail.assign(tail.begin(), tail.end());
  JudgeExits(lease_.first_rank(), codes, error_codes, errors, &outcome);
  if (memory_cap_.bytes > 0 &&
      events::ParseErrorCode(outcome.error_code) == events::ErrorCode::kOutOfMemory) {
    // The trainer's advice is about the job; the owner should also know that
    // this worker drew the line, and where.
    absl::StrAppend(&outcome.reason, "; the trainer ran under this worker's ",
                    memory_cap_.explanation);
  }
  return outcome;
}

absl::Status AttemptRunner::UploadOutputs(std::vector<v1::UploadedArtifact>* artifacts) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(output_dir_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string name = fs::relative(it->path(), output_dir_).generic_string();
    if (name == "checkpoints" && it->is_directory()) {
      it.disable_recursion_pending();  // checkpoints went up as the run went
      continue;
    }
    if (!it->is_regular_file()) continue;
    v1::UploadedArtifact artifact;
    artifact.set_name(name);
    artifact.set_key(absl::StrCat(lease_.output_prefix(), "/output/", name));
    artifact.set_size_bytes(static_cast<int64_t>(it->file_size()));
    ASSIGN_OR_RETURN(std::string digest, Sha256OfFile(it->path()));
    artifact.set_sha256(digest);
    RETURN_IF_ERROR(storage_.PutFile(artifact.key(), it->path()));
    artifacts->push_back(std::move(artifact));
  }
  if (ec)
    return absl::InternalError(
        absl::StrCat("cannot read ", output_dir_.string(), ": ", ec.message()));
  if (artifacts->empty()) return absl::DataLossError("the trainer finished but wrote no output");
  return absl::OkStatus();
}

void AttemptRunner::Complete(const Outcome& outcome,
                             const std::vector<v1::UploadedArtifact>& artifacts) {
  v1::CompleteAttemptRequest request;
  request.set_fence(lease_.fence());
  request.set_rank(lease_.first_rank());
  request.set_succeeded(outcome.succeeded);
  request.set_exit_code(outcome.exit_code);
  request.set_reason(redactor_.Apply(outcome.reason));
  request.set_infrastructure(outcome.infrastructure);
  request.set_permanent(outcome.permanent);
  for (const std::string& line : outcome.stderr_tail)
    request.add_stderr_tail(redactor_.Apply(line));
  for (const v1::UploadedArtifact& artifact : artifacts) *request.add_artifacts() = artifact;
  // The result must reach the scheduler even across its restart: retry
  // transient failures for up to ten minutes.
  for (int attempt = 0; attempt < 240; ++attempt) {
    v1::CompleteAttemptResponse response;
    auto context = identity_.NewCall(settings_.rpc, std::chrono::seconds(30));
    grpc::Status status = stub_.CompleteAttempt(context.get(), request, &response);
    if (status.ok()) return;
    // Refusals about the attempt itself are final; anything else may be the
    // scheduler restarting.
    if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
        status.error_code() == grpc::StatusCode::NOT_FOUND ||
        status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
        status.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
        status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
      std::fprintf(stderr, "diablo-worker: job %s attempt %d: completion refused: %s\n",
                   lease_.job_id().c_str(), lease_.attempt(), status.error_message().c_str());
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  }
}

void AttemptRunner::Run() {
  std::fprintf(stderr, "diablo-worker: job %s attempt %d: ranks %d-%d of %d\n",
               lease_.job_id().c_str(), lease_.attempt(), lease_.first_rank(),
               lease_.first_rank() + lease_.local_ranks() - 1, lease_.world_size());
  Log(absl::StrCat("preparing attempt ", lease_.attempt(), " (ranks ", lease_.first_rank(), "-",
                   lease_.first_rank() + lease_.local_ranks() - 1, " of ", lease_.world_size(),
                   ")"));
  Outcome outcome;
  std::vector<v1::UploadedArtifact> artifacts;
  std::string config_path;
  if (absl::Status prepared = Prepare(&config_path); !prepared.ok()) {
    outcome.reason = std::string(prepared.message());
    outcome.permanent = prepared.code() == absl::StatusCode::kNotFound ||
                        prepared.code() == absl::StatusCode::kInvalidArgument;
  } else {
    outcome = Train(config_path);
    // A trainer that finished before a shutdown stopped it still counts.
    if (outcome.succeeded && lease_.first_rank() == 0 && (!stopped_ || report_stop_)) {
      Log("uploading outputs");
      if (absl::Status uploaded = UploadOutputs(&artifacts); !uploaded.ok()) {
        outcome.succeeded = false;
        outcome.reason = absl::StrCat("uploading outputs failed: ", uploaded.message());
      }
    }
  }
  reporter_->Flush(30);
  if (stopped_ && report_stop_ && !outcome.succeeded) {
    std::lock_guard<std::mutex> lock(mu_);
    outcome.succeeded = false;
    outcome.permanent = false;
    outcome.infrastructure = true;  // this worker is going away, not the job failing
    outcome.reason = stop_reason_;
  }
  // An attempt the scheduler stopped has already ended there: nothing to complete.
  if (!stopped_ || report_stop_) Complete(outcome, artifacts);
  reporter_.reset();
  if (!settings_.keep_job_dirs) {
    std::error_code ec;
    fs::remove_all(job_dir_, ec);
  }
  std::fprintf(stderr, "diablo-worker: job %s attempt %d: %s\n", lease_.job_id().c_str(),
               lease_.attempt(),
               stopped_            ? "stopped"
               : outcome.succeeded ? "succeeded"
                                   : outcome.reason.c_str());
  done_ = true;
}

}  // namespace diablo::agent
