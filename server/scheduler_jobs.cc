// Scheduler: the public side — creating, reading, listing and cancelling
// jobs, their event log and artifacts, and uploaded files.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/json_util.h>

#include <nlohmann/json.hpp>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "server/migrations.h"
#include "server/scheduler.h"

namespace diablo::server {
namespace {

constexpr const char* kJobColumns =
    "id, name, labels, spec, priority, devices_per_node, nodes, max_retries, state, reason, "
    "attempts, "
    "created_at, started_at, finished_at, step, total_steps, loss, tokens_per_s, eta_s, "
    "checkpoint_step, "
    "estimated_bytes, current_fence, lr, eval_loss, peak_rss_bytes";

v1::Job JobFromRow(const Statement& row) {
  v1::Job job;
  job.set_id(row.Text(0));
  job.set_name(row.Text(1));
  nlohmann::json labels = nlohmann::json::parse(row.Text(2), nullptr, false);
  if (labels.is_object())
    for (auto& [key, value] : labels.items())
      (*job.mutable_labels())[key] = value.get<std::string>();
  (void)google::protobuf::util::JsonStringToMessage(row.Text(3), job.mutable_spec());
  job.set_priority(static_cast<int32_t>(row.Int(4)));
  job.set_devices_per_node(static_cast<int32_t>(row.Int(5)));
  job.set_nodes(static_cast<int32_t>(row.Int(6)));
  job.set_max_retries(static_cast<int32_t>(row.Int(7)));
  job.set_state(static_cast<v1::JobState>(row.Int(8)));
  job.set_reason(row.Text(9));
  job.set_attempts(static_cast<int32_t>(row.Int(10)));
  job.set_created_at(static_cast<int64_t>(row.Double(11)));
  job.set_started_at(static_cast<int64_t>(row.Double(12)));
  job.set_finished_at(static_cast<int64_t>(row.Double(13)));
  job.set_step(row.Int(14));
  job.set_total_steps(row.Int(15));
  job.set_loss(row.Double(16));
  job.set_tokens_per_s(row.Double(17));
  job.set_eta_s(row.Double(18));
  job.set_checkpoint_step(row.Int(19));
  job.set_estimated_bytes(row.Int(20));
  job.set_lr(row.Double(22));
  job.set_eval_loss(row.Double(23));
  job.set_peak_rss_bytes(row.Int(24));
  return job;
}

bool IsFinal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

absl::Status AddWorkers(Db& db, int64_t fence, v1::Job& job) {
  if (fence == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(
      Statement ranks,
      db.Prepare("SELECT worker_id FROM attempt_ranks WHERE fence = ? ORDER BY first_rank"));
  ranks.Bind(fence);
  while (true) {
    ASSIGN_OR_RETURN(bool row, ranks.Step());
    if (!row) break;
    job.add_workers(ranks.Text(0));
  }
  return absl::OkStatus();
}

}  // namespace

double NowSeconds() { return absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()); }

std::string NewId(const char* prefix) {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  return absl::StrCat(prefix, absl::Hex(rng(), absl::kZeroPad16));
}

std::string NewSecret(const char* prefix) {
  std::random_device device;
  std::string secret = prefix;
  for (int i = 0; i < 4; ++i) {
    const uint64_t word = (static_cast<uint64_t>(device()) << 32) | device();
    absl::StrAppend(&secret, absl::Hex(word, absl::kZeroPad16));
  }
  return secret;
}

Scheduler::Scheduler(std::unique_ptr<Db> db, std::unique_ptr<ObjectStore> storage,
                     SchedulerConfig config)
    : db_(std::move(db)), storage_(std::move(storage)), config_(std::move(config)) {}

Scheduler::~Scheduler() = default;

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Open(std::unique_ptr<Db> db,
                                                           std::unique_ptr<ObjectStore> storage,
                                                           SchedulerConfig config) {
  RETURN_IF_ERROR(Migrate(*db));
  std::unique_ptr<Scheduler> scheduler(
      new Scheduler(std::move(db), std::move(storage), std::move(config)));
  // After a restart: every known worker gets a full lease timeout to check in
  // again, and running attempts a full stall timeout to report.
  const double now = NowSeconds();
  scheduler->started_at_ = now;
  ASSIGN_OR_RETURN(Statement workers,
                   scheduler->db_->Prepare("SELECT id FROM workers WHERE lost = 0"));
  while (true) {
    ASSIGN_OR_RETURN(bool row, workers.Step());
    if (!row) break;
    scheduler->last_seen_[workers.Text(0)] = now;
  }
  ASSIGN_OR_RETURN(Statement touch, scheduler->db_->Prepare(
                                        "UPDATE attempts SET last_report_at = ? WHERE active = 1"));
  RETURN_IF_ERROR(touch.Bind(now).Run());
  return scheduler;
}

void Scheduler::NotifyChange() {
  ++change_counter_;
  changed_.notify_all();
}

void Scheduler::BeginShutdown() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  NotifyChange();
}

void Scheduler::WaitForChange(int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t seen = change_counter_;
  changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                    [&] { return change_counter_ != seen || stopping_.load(); });
}

absl::StatusOr<v1::Job> Scheduler::LoadJob(const std::string& tenant, const std::string& id) {
  ASSIGN_OR_RETURN(
      Statement select,
      db_->Prepare(absl::StrCat("SELECT ", kJobColumns, " FROM jobs WHERE id = ? AND tenant = ?")));
  select.Bind(id).Bind(tenant);
  ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  v1::Job job = JobFromRow(select);
  RETURN_IF_ERROR(AddWorkers(*db_, select.Int(21), job));
  return job;
}

absl::Status Scheduler::AppendEvent(const std::string& job_id, int attempt, v1::JobEvent event) {
  ASSIGN_OR_RETURN(
      Statement bump,
      db_->Prepare("UPDATE jobs SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq"));
  bump.Bind(job_id);
  ASSIGN_OR_RETURN(bool row, bump.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  event.set_seq(bump.Int(0));
  event.set_job_id(job_id);
  event.set_attempt(attempt);
  if (event.time() == 0) event.set_time(NowSeconds());
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(event, &json);
  ASSIGN_OR_RETURN(Statement insert,
                   db_->Prepare("INSERT INTO events (job_id, seq, event) VALUES (?, ?, ?)"));
  RETURN_IF_ERROR(insert.Bind(job_id).Bind(event.seq()).Bind(json).Run());
  NotifyChange();
  return absl::OkStatus();
}

absl::Status Scheduler::SetState(const std::string& job_id, v1::JobState from, v1::JobState to,
                                 const std::string& reason) {
  const double now = NowSeconds();
  std::string extra;
  if (to == v1::JOB_STATE_RUNNING)
    extra = ", started_at = CASE WHEN started_at = 0 THEN ?3 ELSE started_at END";
  if (IsFinal(to)) extra = ", finished_at = ?3";
  ASSIGN_OR_RETURN(Statement update,
                   db_->Prepare(absl::StrCat("UPDATE jobs SET state = ?1, reason = ?2", extra,
                                             " WHERE id = ?4")));
  update.Bind(static_cast<int64_t>(to)).Bind(reason).Bind(now).Bind(job_id);
  RETURN_IF_ERROR(update.Run());
  v1::JobEvent event;
  event.mutable_state()->set_from(from);
  event.mutable_state()->set_to(to);
  event.mutable_state()->set_reason(reason);
  return AppendEvent(job_id, 0, std::move(event));
}

absl::StatusOr<v1::Job> Scheduler::CreateJob(const std::string& tenant,
                                             const v1::CreateJobRequest& request,
                                             const ValidatedJob& job) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string fingerprint = RequestFingerprint(request);
  ASSIGN_OR_RETURN(std::optional<std::string> existing,
                   JobForIdempotencyKey(tenant, request.idempotency_key(), fingerprint));
  if (existing) return LoadJob(tenant, *existing);
  if (const int64_t limit = LimitsFor(tenant).queued_jobs; limit > 0) {
    ASSIGN_OR_RETURN(
        Statement queued,
        db_->Prepare("SELECT COUNT(*) FROM jobs WHERE tenant = ? AND state IN (1, 2)"));
    queued.Bind(tenant);
    ASSIGN_OR_RETURN(bool row, queued.Step());
    if (row && queued.Int(0) >= limit)
      return absl::ResourceExhaustedError(absl::StrCat(
          "tenant ", tenant, " already has ", queued.Int(0), " queued jobs (the limit is ", limit,
          "); wait for some to start or cancel them (diablo-ctl cancel JOB)"));
  }
  nlohmann::json labels = nlohmann::json::object();
  for (const auto& [key, value] : request.labels()) labels[key] = value;
  nlohmann::json inputs = nlohmann::json::array();
  for (const v1::Input& input : job.inputs)
    inputs.push_back({{"field", input.field()},
                      {"key", input.key()},
                      {"uri", input.uri()},
                      {"path", input.path()},
                      {"sha256", input.sha256()},
                      {"name", input.name()}});

  const std::string id = NewId("j-");
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*db_));
  ASSIGN_OR_RETURN(Statement insert,
                   db_->Prepare("INSERT INTO jobs (id, tenant, name, labels, spec, config, inputs, "
                                "priority, devices_per_node, nodes, max_retries, idempotency_key, "
                                "request_sha256, estimated_bytes, state, created_at) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  insert.Bind(id)
      .Bind(tenant)
      .Bind(request.name())
      .Bind(labels.dump())
      .Bind(job.spec_json)
      .Bind(job.config_json)
      .Bind(inputs.dump())
      .Bind(request.priority())
      .Bind(std::max(request.devices_per_node(), 1))
      .Bind(std::max(request.nodes(), 1))
      .Bind(request.has_max_retries() ? request.max_retries() : kDefaultMaxRetries);
  if (request.idempotency_key().empty())
    insert.BindNull();
  else
    insert.Bind(request.idempotency_key());
  insert.Bind(fingerprint)
      .Bind(job.estimated_bytes)
      .Bind(static_cast<int64_t>(v1::JOB_STATE_QUEUED))
      .Bind(NowSeconds());
  RETURN_IF_ERROR(insert.Run());
  RETURN_IF_ERROR(SetState(id, v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_QUEUED, "submitted"));
  RETURN_IF_ERROR(PlaceQueuedJobs());
  RETURN_IF_ERROR(txn.Commit());
  return LoadJob(tenant, id);
}

std::string RequestFingerprint(const v1::CreateJobRequest& request) {
  v1::CreateJobRequest keyless = request;
  keyless.clear_idempotency_key();
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream out(&bytes);
    google::protobuf::io::CodedOutputStream coded(&out);
    coded.SetSerializationDeterministic(true);  // labels are a map
    keyless.SerializeToCodedStream(&coded);
  }
  return Sha256Hex(bytes);
}

absl::StatusOr<std::optional<std::string>> Scheduler::JobForIdempotencyKey(
    const std::string& tenant, const std::string& key, const std::string& fingerprint) {
  if (key.empty()) return std::optional<std::string>();
  ASSIGN_OR_RETURN(Statement existing,
                   db_->Prepare("SELECT id, request_sha256 FROM jobs WHERE tenant = ? AND "
                                "idempotency_key = ?"));
  existing.Bind(tenant).Bind(key);
  ASSIGN_OR_RETURN(bool found, existing.Step());
  if (!found) return std::optional<std::string>();
  const std::string recorded = existing.Text(1);
  if (!recorded.empty() && recorded != fingerprint)
    return absl::InvalidArgumentError(absl::StrCat(
        "idempotency_key \"", key, "\" was used for a different request (job ", existing.Text(0),
        "); a retry must repeat the request exactly, a new job needs a new key"));
  return std::optional<std::string>(existing.Text(0));
}

absl::StatusOr<v1::Job> Scheduler::FindByIdempotencyKey(const std::string& tenant,
                                                        const v1::CreateJobRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(
      std::optional<std::string> existing,
      JobForIdempotencyKey(tenant, request.idempotency_key(), RequestFingerprint(request)));
  if (!existing) return absl::NotFoundError("no job has this idempotency key");
  return LoadJob(tenant, *existing);
}

absl::StatusOr<v1::Job> Scheduler::GetJob(const std::string& tenant, const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  return LoadJob(tenant, id);
}

absl::StatusOr<v1::ListJobsResponse> Scheduler::ListJobs(const std::string& tenant,
                                                         const v1::ListJobsRequest& request) {
  const int page_size = request.page_size() <= 0 ? 50 : std::min(request.page_size(), 500);
  // Page tokens are the (created_at, id) of the last job of the previous page.
  double after_created = 1e300;
  std::string after_id = "~";
  if (!request.page_token().empty()) {
    std::vector<std::string> parts = absl::StrSplit(request.page_token(), '|');
    if (parts.size() != 2 || !absl::SimpleAtod(parts[0], &after_created))
      return absl::InvalidArgumentError("page_token: not a token this server returned");
    after_id = parts[1];
  }
  std::string states;
  for (int state : request.states()) absl::StrAppend(&states, states.empty() ? "" : ",", state);
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(
      Statement select,
      db_->Prepare(absl::StrCat(
          "SELECT ", kJobColumns,
          " FROM jobs WHERE tenant = ? AND (created_at < ? OR (created_at = ? AND id < ?))",
          states.empty() ? "" : absl::StrCat(" AND state IN (", states, ")"),
          " ORDER BY created_at DESC, id DESC")));
  select.Bind(tenant).Bind(after_created).Bind(after_created).Bind(after_id);
  v1::ListJobsResponse response;
  double last_created = 0;
  while (true) {
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    v1::Job job = JobFromRow(select);
    bool labels_match = true;
    for (const auto& [key, value] : request.labels()) {
      auto it = job.labels().find(key);
      if (it == job.labels().end() || it->second != value) labels_match = false;
    }
    if (!labels_match) continue;
    if (response.jobs_size() == page_size) {
      response.set_next_page_token(absl::StrCat(absl::StrFormat("%.17g", last_created), "|",
                                                response.jobs().rbegin()->id()));
      break;
    }
    last_created = select.Double(11);
    RETURN_IF_ERROR(AddWorkers(*db_, select.Int(21), job));
    *response.add_jobs() = std::move(job);
  }
  return response;
}

absl::StatusOr<v1::Job> Scheduler::CancelJob(const std::string& tenant, const std::string& id,
                                             const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(v1::Job job, LoadJob(tenant, id));
  if (IsFinal(job.state())) return job;  // cancelling twice, or after the end, changes nothing
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*db_));
  ASSIGN_OR_RETURN(Statement end,
                   db_->Prepare("UPDATE attempts SET active = 0, ended_at = ?, reason = "
                                "'cancelled' WHERE job_id = ? AND active = 1"));
  RETURN_IF_ERROR(end.Bind(NowSeconds()).Bind(id).Run());
  RETURN_IF_ERROR(
      SetState(id, job.state(), v1::JOB_STATE_CANCELLED,
               reason.empty() ? "cancelled by the user" : absl::StrCat("cancelled: ", reason)));
  RETURN_IF_ERROR(txn.Commit());
  return LoadJob(tenant, id);
}

absl::StatusOr<std::vector<v1::JobEvent>> Scheduler::EventsAfter(const std::string& tenant,
                                                                 const std::string& id,
                                                                 int64_t after_seq, int limit,
                                                                 bool* finished) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(v1::Job job, LoadJob(tenant, id));
  ASSIGN_OR_RETURN(
      Statement select,
      db_->Prepare("SELECT event FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?"));
  select.Bind(id).Bind(after_seq).Bind(limit);
  std::vector<v1::JobEvent> events;
  while (true) {
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    v1::JobEvent event;
    (void)google::protobuf::util::JsonStringToMessage(select.Text(0), &event);
    events.push_back(std::move(event));
  }
  *finished = IsFinal(job.state()) && static_cast<int>(events.size()) < limit;
  return events;
}

absl::StatusOr<std::vector<ArtifactRow>> Scheduler::ListArtifacts(const std::string& tenant,
                                                                  const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(LoadJob(tenant, id).status());
  ASSIGN_OR_RETURN(Statement select, db_->Prepare("SELECT name, storage_key, size_bytes, sha256 "
                                                  "FROM artifacts WHERE job_id = ? ORDER BY name"));
  select.Bind(id);
  std::vector<ArtifactRow> artifacts;
  while (true) {
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    artifacts.push_back({select.Text(0), select.Text(1), select.Text(3), select.Int(2)});
  }
  return artifacts;
}

// ---- files

namespace {
constexpr const char* kFileColumns = "id, name, size_bytes, sha256, created_at, storage_key";
FileRow FileFromRow(const Statement& row) {
  FileRow file;
  file.file.set_id(row.Text(0));
  file.file.set_name(row.Text(1));
  file.file.set_size_bytes(row.Int(2));
  file.file.set_sha256(row.Text(3));
  file.file.set_created_at(static_cast<int64_t>(row.Double(4)));
  file.storage_key = row.Text(5);
  return file;
}
}  // namespace

TenantLimits Scheduler::LimitsFor(std::string_view tenant) const {
  TenantLimits defaults = config_.tenant_limits;
  defaults.queued_jobs = config_.max_queued_jobs_per_tenant;
  return config_.quotas.Apply(tenant, defaults);
}

absl::StatusOr<Scheduler::FileUsage> Scheduler::FilesHeldBy(const std::string& tenant) {
  ASSIGN_OR_RETURN(
      Statement usage,
      db_->Prepare("SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM files WHERE tenant = ?"));
  usage.Bind(tenant);
  ASSIGN_OR_RETURN(bool row, usage.Step());
  if (!row) return FileUsage();
  return FileUsage{usage.Int(0), usage.Int(1)};
}

namespace {

// Each refusal names the limit, the usage and the way out.
constexpr const char* kFreeSpaceHint =
    "delete uploads no longer needed (diablo-ctl files list, diablo-ctl files rm ID) or ask the "
    "operator for a larger quota (diablo-scheduler --quotas)";

// RESOURCE_EXHAUSTED when `size_bytes` more (one more file) would pass
// `tenant`'s upload quotas, counting `pending` as held too.
absl::Status CheckFileQuotas(const std::string& tenant, const TenantLimits& limits,
                             int64_t held_files, int64_t held_bytes, int64_t pending_files,
                             int64_t pending_bytes, int64_t size_bytes) {
  const std::string in_progress =
      pending_files == 0 ? std::string()
                         : absl::StrCat(" (", pending_files, " more in uploads in progress, ",
                                        HumanBytes(pending_bytes), ")");
  if (limits.files > 0 && held_files + pending_files + 1 > limits.files)
    return absl::ResourceExhaustedError(
        absl::StrCat("file quota: tenant ", tenant, " holds ", held_files, " uploaded files",
                     in_progress, " and may hold ", limits.files, "; ", kFreeSpaceHint));
  if (limits.upload_bytes > 0 && size_bytes > limits.upload_bytes - held_bytes - pending_bytes)
    return absl::ResourceExhaustedError(absl::StrCat(
        "upload quota: tenant ", tenant, " holds ", HumanBytes(held_bytes), " of uploads",
        in_progress, " and may hold ", HumanBytes(limits.upload_bytes), "; this upload of ",
        HumanBytes(size_bytes), " does not fit; ", kFreeSpaceHint));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<UploadTracker::Slot> Scheduler::BeginUpload(const std::string& tenant,
                                                           int64_t size_bytes) {
  const TenantLimits limits = LimitsFor(tenant);
  // Under mu_, so that the check and the slot are one step for every upload
  // of this tenant (slots are given back without it: that only frees room).
  std::lock_guard<std::mutex> lock(mu_);
  const UploadTracker::InFlight pending = uploads_.Of(tenant);
  if (limits.concurrent_uploads > 0 && pending.uploads >= limits.concurrent_uploads)
    return absl::ResourceExhaustedError(
        absl::StrCat("concurrent upload limit: tenant ", tenant, " has ", pending.uploads,
                     " uploads in progress and may have ", limits.concurrent_uploads,
                     "; wait for one to finish, then retry"));
  ASSIGN_OR_RETURN(FileUsage held, FilesHeldBy(tenant));
  RETURN_IF_ERROR(CheckFileQuotas(tenant, limits, held.files, held.bytes, pending.uploads,
                                  pending.bytes, size_bytes));
  return uploads_.Acquire(tenant, size_bytes);
}

absl::StatusOr<v1::File> Scheduler::AddFile(const std::string& tenant,
                                            const v1::UploadHeader& header,
                                            const std::string& storage_key) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string id = storage_key.substr(storage_key.rfind('/') + 1);
  // Again, against the store alone: the uploads that were in progress at
  // BeginUpload may have been stored since.
  ASSIGN_OR_RETURN(FileUsage held, FilesHeldBy(tenant));
  RETURN_IF_ERROR(CheckFileQuotas(tenant, LimitsFor(tenant), held.files, held.bytes, 0, 0,
                                  header.size_bytes()));
  ASSIGN_OR_RETURN(Statement insert,
                   db_->Prepare("INSERT INTO files (id, tenant, name, size_bytes, sha256, "
                                "storage_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"));
  const double now = NowSeconds();
  RETURN_IF_ERROR(insert.Bind(id)
                      .Bind(tenant)
                      .Bind(header.name())
                      .Bind(header.size_bytes())
                      .Bind(header.sha256())
                      .Bind(storage_key)
                      .Bind(now)
                      .Run());
  v1::File file;
  file.set_id(id);
  file.set_name(header.name());
  file.set_size_bytes(header.size_bytes());
  file.set_sha256(header.sha256());
  file.set_created_at(static_cast<int64_t>(now));
  return file;
}

absl::StatusOr<FileRow> Scheduler::GetFile(const std::string& tenant, const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare(absl::StrCat("SELECT ", kFileColumns,
                                             " FROM files WHERE tenant = ? AND id = ?")));
  select.Bind(tenant).Bind(id);
  ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("file ", id, " not found"));
  return FileFromRow(select);
}

absl::StatusOr<v1::File> Scheduler::FindFile(const std::string& tenant, const std::string& sha256) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare(absl::StrCat(
                       "SELECT ", kFileColumns,
                       " FROM files WHERE tenant = ? AND sha256 = ? ORDER BY created_at LIMIT 1")));
  select.Bind(tenant).Bind(sha256);
  ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("no uploaded file has SHA-256 ", sha256));
  return FileFromRow(select).file;
}

absl::StatusOr<v1::ListFilesResponse> Scheduler::ListFiles(const std::string& tenant,
                                                           const v1::ListFilesRequest& request) {
  const int page_size = request.page_size() <= 0 ? 100 : std::min(request.page_size(), 1000);
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(
      Statement select,
      db_->Prepare(absl::StrCat("SELECT ", kFileColumns,
                                " FROM files WHERE tenant = ? AND id > ? ORDER BY id LIMIT ?")));
  select.Bind(tenant).Bind(request.page_token()).Bind(page_size + 1);
  v1::ListFilesResponse response;
  while (true) {
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    if (response.files_size() == page_size) {
      response.set_next_page_token(response.files().rbegin()->id());
      break;
    }
    *response.add_files() = FileFromRow(select).file;
  }
  return response;
}

absl::Status Scheduler::DeleteFile(const std::string& tenant, const std::string& id) {
  std::string storage_key;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT storage_key FROM files WHERE tenant = ? AND id = ?"));
    select.Bind(tenant).Bind(id);
    ASSIGN_OR_RETURN(bool found, select.Step());
    if (!found) return absl::NotFoundError(absl::StrCat("file ", id, " not found"));
    storage_key = select.Text(0);
    ASSIGN_OR_RETURN(Statement users, db_->Prepare("SELECT id FROM jobs WHERE tenant = ? AND state "
                                                   "IN (1, 2, 3) AND inputs LIKE ? LIMIT 1"));
    users.Bind(tenant).Bind(absl::StrCat("%\"", storage_key, "\"%"));
    ASSIGN_OR_RETURN(bool in_use, users.Step());
    if (in_use)
      return absl::FailedPreconditionError(
          absl::StrCat("file ", id, " is an input of job ", users.Text(0),
                       ", which has not finished; cancel it or wait"));
    ASSIGN_OR_RETURN(Statement remove, db_->Prepare("DELETE FROM files WHERE id = ?"));
    RETURN_IF_ERROR(remove.Bind(id).Run());
  }
  // The row is gone first: a crash here leaves an orphaned object, never a
  // row that points at nothing.
  return storage_->Delete(storage_key);
}

}  // namespace diablo::server
