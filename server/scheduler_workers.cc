// Scheduler: the worker side — registration, heartbeats and leases,
// placement of queued jobs, trainer reports, completion, and the periodic
// expiry of silent workers and stalled attempts.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/absl_view.h"
#include "common/safe_name.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "server/scheduler.h"

namespace diablo::server {
namespace {

struct WorkerSlot {
  std::string id, name, host, kind;
  int capacity = 1;
  int used = 0;
  int64_t memory_bytes = 0;
};

int Capacity(int devices) { return std::max(devices, 1); }

// Ranks a job runs on one node of this kind: one per device on a GPU node,
// one on a CPU node.
int LocalRanks(const std::string& kind, int devices_per_node) {
  return kind == "cuda" ? std::max(devices_per_node, 1) : 1;
}

bool Fits(const WorkerSlot& w, const Requirements& needs, bool use_free) {
  // More than one device per node means GPUs; a CPU node runs one rank.
  if ((needs.needs_cuda || needs.devices_per_node > 1) && w.kind != "cuda") return false;
  const int ranks = LocalRanks(w.kind, needs.devices_per_node);
  if (w.kind == "cuda" && needs.devices_per_node > w.capacity) return false;
  if ((use_free ? w.capacity - w.used : w.capacity) < ranks) return false;
  return w.memory_bytes >= needs.bytes_per_rank;
}

std::string GiB(int64_t bytes) {
  return absl::StrFormat("%.1f GiB", static_cast<double>(bytes) / (1 << 30));
}

}  // namespace

bool Scheduler::WorkerAlive(const std::string& worker_id, double now) const {
  auto it = last_seen_.find(worker_id);
  return it != last_seen_.end() && now - it->second <= config_.lease_timeout_s;
}

// ---- registration and heartbeats

absl::StatusOr<v1::RegisterWorkerResponse> Scheduler::RegisterWorker(
    const v1::RegisterWorkerRequest& request, const std::string& token_id) {
  if (request.name().empty()) return absl::InvalidArgumentError("name: must not be empty");
  if (request.host().empty())
    return absl::InvalidArgumentError("host: must not be empty (the rendezvous address)");
  if (request.device_kind() != "cpu" && request.device_kind() != "cuda")
    return absl::InvalidArgumentError(
        absl::StrCat("device_kind: must be cpu or cuda, got \"", request.device_kind(), "\""));
  if (request.devices() < 0 || (request.device_kind() == "cuda" && request.devices() == 0))
    return absl::InvalidArgumentError("devices: a cuda worker needs at least one device");
  if (request.memory_bytes() <= 0)
    return absl::InvalidArgumentError("memory_bytes: must be positive");

  std::lock_guard<std::mutex> lock(mu_);
  const double now = NowSeconds();
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*db_));
  RETURN_IF_ERROR(CheckNameFreeFor(request.name(), token_id, now));
  // A worker that registers again under its name has restarted: whatever its
  // previous incarnation ran is gone.
  ASSIGN_OR_RETURN(Statement previous,
                   db_->Prepare("SELECT id FROM workers WHERE name = ? AND lost = 0"));
  previous.Bind(request.name());
  ASSIGN_OR_RETURN(std::vector<std::string> stale, FirstColumnTexts(previous));
  for (const std::string& id : stale)
    RETURN_IF_ERROR(LoseWorker(id, absl::StrCat("worker ", request.name(), " restarted")));
  const std::string id = NewId("w-");
  const std::string credential = NewSecret("dwc_");
  ASSIGN_OR_RETURN(Statement insert,
                   db_->Prepare("INSERT INTO workers (id, name, host, devices, device_kind, "
                                "memory_bytes, version, registered_at, token_id, "
                                "credential_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  RETURN_IF_ERROR(insert.Bind(id)
                      .Bind(request.name())
                      .Bind(request.host())
                      .Bind(request.devices())
                      .Bind(request.device_kind())
                      .Bind(request.memory_bytes())
                      .Bind(request.version())
                      .Bind(now)
                      .Bind(token_id)
                      .Bind(Sha256Hex(credential))
                      .Run());
  last_seen_[id] = now;
  RETURN_IF_ERROR(PlaceQueuedJobs());
  RETURN_IF_ERROR(txn.Commit());
  NotifyChange();
  v1::RegisterWorkerResponse response;
  response.set_worker_id(id);
  response.set_heartbeat_interval_s(config_.heartbeat_interval_s);
  response.set_lease_timeout_s(config_.lease_timeout_s);
  response.set_storage_uri(config_.storage_uri);
  response.set_credential(credential);
  return response;
}

absl::StatusOr<v1::HeartbeatResponse> Scheduler::Heartbeat(const v1::HeartbeatRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  v1::HeartbeatResponse response;
  if (last_seen_.count(request.worker_id()) == 0) {
    response.set_known(false);
    for (int64_t fence : request.running_fences()) response.add_stop_fences(fence);
    return response;
  }
  const double now = NowSeconds();
  last_seen_[request.worker_id()] = now;
  if (request.draining()) draining_.insert(request.worker_id());
  response.set_known(true);
  std::set<int64_t> running(request.running_fences().begin(), request.running_fences().end());
  for (int64_t fence : running) {
    ASSIGN_OR_RETURN(
        Statement check,
        db_->Prepare("SELECT a.active FROM attempts a JOIN attempt_ranks r ON r.fence = a.fence "
                     "WHERE a.fence = ? AND r.worker_id = ?"));
    check.Bind(fence).Bind(request.worker_id());
    ASSIGN_OR_RETURN(bool row, check.Step());
    if (!row || check.Int(0) == 0) response.add_stop_fences(fence);
  }
  // Attempts this worker took but no longer runs (its agent restarted, or the
  // lease reply never arrived) are failed now rather than at the stall timeout.
  ASSIGN_OR_RETURN(
      Statement taken,
      db_->Prepare(
          "SELECT a.fence, a.started_at FROM attempt_ranks r JOIN attempts a ON a.fence = r.fence "
          "WHERE r.worker_id = ? AND r.picked_up = 1 AND r.done = 0 AND a.active = 1"));
  taken.Bind(request.worker_id());
  std::vector<int64_t> orphaned;
  while (true) {
    ASSIGN_OR_RETURN(bool row, taken.Step());
    if (!row) break;
    if (running.count(taken.Int(0)) == 0 &&
        now - taken.Double(1) > 2 * config_.heartbeat_interval_s)
      orphaned.push_back(taken.Int(0));
  }
  if (!orphaned.empty()) {
    ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*db_));
    for (int64_t fence : orphaned)
      RETURN_IF_ERROR(
          FailAttempt(fence, "the worker no longer runs this attempt", Failure::kInfrastructure));
    RETURN_IF_ERROR(txn.Commit());
  }
  return response;
}

// ---- placement and leases

absl::Status Scheduler::CheckPlaceable(const Requirements& needs) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare("SELECT id, name, device_kind, devices, memory_bytes FROM workers "
                                "WHERE lost = 0 ORDER BY name"));
  int fitting = 0;
  std::vector<std::string> seen;
  while (true) {
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    WorkerSlot w{select.Text(0),
                 select.Text(1),
                 "",
                 select.Text(2),
                 Capacity(static_cast<int>(select.Int(3))),
                 0,
                 select.Int(4)};
    if (Fits(w, needs, false)) ++fitting;
    seen.push_back(absl::StrCat(w.name, " (", w.kind, ", ", w.kind == "cuda" ? w.capacity : 0,
                                " devices, ", GiB(w.memory_bytes), ")"));
  }
  if (fitting >= needs.nodes) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "no registered worker can run this job: it needs ", needs.nodes, " node(s), each with ",
      needs.needs_cuda || needs.devices_per_node > 1
          ? absl::StrCat(needs.devices_per_node, " CUDA device(s)")
          : std::string("a free slot"),
      " and ", GiB(needs.bytes_per_rank), " per rank (estimated); ", fitting,
      " fit, registered: ", seen.empty() ? std::string("none") : absl::StrJoin(seen, ", "),
      ". Lower optim.micro_batch or data.max_seq_len, add workers, or submit with queue_anyway "
      "(--queue-anyway)"));
}

namespace {

// Jobs each tenant has assigned or running, which --max-running-jobs and
// the quotas file's running_jobs bound.
absl::StatusOr<std::map<std::string, int64_t>> RunningJobsByTenant(Db& db) {
  ASSIGN_OR_RETURN(Statement select, db.Prepare("SELECT tenant, COUNT(*) FROM jobs "
                                                "WHERE state IN (2, 3) GROUP BY tenant"));
  std::map<std::string, int64_t> running;
  while (true) {
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    running[select.Text(0)] = select.Int(1);
  }
  return running;
}

}  // namespace

absl::Status Scheduler::PlaceQueuedJobs() {
  const double now = NowSeconds();
  std::vector<WorkerSlot> workers;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id, name, host, device_kind, devices, memory_bytes FROM "
                                  "workers WHERE lost = 0 ORDER BY registered_at"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      if (!WorkerAlive(select.Text(0), now) || draining_.count(select.Text(0)) != 0) continue;
      workers.push_back({select.Text(0), select.Text(1), select.Text(2), select.Text(3),
                         Capacity(static_cast<int>(select.Int(4))), 0, select.Int(5)});
    }
  }
  if (workers.empty()) return absl::OkStatus();
  {
    ASSIGN_OR_RETURN(Statement used,
                     db_->Prepare("SELECT r.worker_id, SUM(r.local_ranks) FROM attempt_ranks r "
                                  "JOIN attempts a ON a.fence = r.fence "
                                  "WHERE a.active = 1 GROUP BY r.worker_id"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, used.Step());
      if (!row) break;
      for (WorkerSlot& w : workers)
        if (w.id == used.Text(0)) w.used = static_cast<int>(used.Int(1));
    }
  }
  struct Queued {
    std::string id;
    Requirements needs;
    int attempts;
    std::string tenant;
  };
  std::vector<Queued> queued;
  {
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare(
                         // SQLite reads the device out of the stored config (json1): no JSON parse
                         // here per queued job on every lease call.
                         "SELECT id, nodes, devices_per_node, estimated_bytes, "
                         "json_extract(config, '$.device') = 'cuda', attempts, tenant "
                         "FROM jobs WHERE state = 1 "
                         "ORDER BY priority DESC, created_at"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, select.Step());
      if (!row) break;
      Requirements needs{static_cast<int>(select.Int(1)), static_cast<int>(select.Int(2)),
                         select.Int(3), select.Int(4) == 1};
      queued.push_back({select.Text(0), needs, static_cast<int>(select.Int(5)), select.Text(6)});
    }
  }
  ASSIGN_OR_RETURN(auto running, RunningJobsByTenant(*db_));
  for (const Queued& job : queued) {
    // A tenant at its running-jobs limit keeps its jobs queued (not failed)
    // until one of its running jobs ends; other tenants' jobs go on past it.
    if (const int64_t limit = LimitsFor(job.tenant).running_jobs;
        limit > 0 && running[job.tenant] >= limit)
      continue;
    // First fit, in queue order: a job that does not fit now does not hold
    // back smaller ones behind it.
    std::vector<WorkerSlot*> chosen;
    for (WorkerSlot& w : workers) {
      if (static_cast<int>(chosen.size()) == job.needs.nodes) break;
      if (Fits(w, job.needs, true)) chosen.push_back(&w);
    }
    if (static_cast<int>(chosen.size()) < job.needs.nodes) continue;  // gang: all nodes or none
    ASSIGN_OR_RETURN(Statement attempt,
                     db_->Prepare("INSERT INTO attempts (job_id, number, started_at, "
                                  "last_report_at, master_addr, master_port) "
                                  "VALUES (?, ?, ?, ?, ?, 0) RETURNING fence"));
    attempt.Bind(job.id).Bind(job.attempts + 1).Bind(now).Bind(now).Bind(chosen[0]->host);
    ASSIGN_OR_RETURN(bool inserted, attempt.Step());
    if (!inserted) return absl::InternalError("attempt insert returned no fence");
    const int64_t fence = attempt.Int(0);
    ASSIGN_OR_RETURN(Statement port,
                     db_->Prepare("UPDATE attempts SET master_port = ? WHERE fence = ?"));
    RETURN_IF_ERROR(port.Bind(config_.rendezvous_port_base +
                              static_cast<int>(fence % config_.rendezvous_port_range))
                        .Bind(fence)
                        .Run());
    int next_rank = 0;
    std::vector<std::string> names;
    for (WorkerSlot* w : chosen) {
      const int local = LocalRanks(w->kind, job.needs.devices_per_node);
      ASSIGN_OR_RETURN(Statement rank,
                       db_->Prepare("INSERT INTO attempt_ranks (fence, worker_id, first_rank, "
                                    "local_ranks) VALUES (?, ?, ?, ?)"));
      RETURN_IF_ERROR(rank.Bind(fence).Bind(w->id).Bind(next_rank).Bind(local).Run());
      next_rank += local;
      w->used += local;
      names.push_back(w->name);
    }
    ASSIGN_OR_RETURN(
        Statement update,
        db_->Prepare("UPDATE jobs SET attempts = attempts + 1, current_fence = ? WHERE id = ?"));
    RETURN_IF_ERROR(update.Bind(fence).Bind(job.id).Run());
    RETURN_IF_ERROR(SetState(
        job.id, v1::JOB_STATE_QUEUED, v1::JOB_STATE_ASSIGNED,
        absl::StrCat("attempt ", job.attempts + 1, " placed on ", absl::StrJoin(names, ", "))));
    ++running[job.tenant];
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<v1::Lease>> Scheduler::PendingLease(const std::string& worker_id) {
  ASSIGN_OR_RETURN(
      Statement select,
      db_->Prepare(
          "SELECT a.fence, r.first_rank, r.local_ranks, a.number, a.master_addr, a.master_port, "
          "a.job_id, "
          "j.config, j.inputs, j.checkpoint_key, j.checkpoint_step, j.nodes "
          "FROM attempt_ranks r JOIN attempts a ON a.fence = r.fence JOIN jobs j ON j.id = "
          "a.job_id "
          "WHERE r.worker_id = ? AND r.picked_up = 0 AND a.active = 1 ORDER BY a.fence LIMIT 1"));
  select.Bind(worker_id);
  ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return std::optional<v1::Lease>();
  v1::Lease lease;
  lease.set_fence(select.Int(0));
  lease.set_first_rank(static_cast<int32_t>(select.Int(1)));
  lease.set_local_ranks(static_cast<int32_t>(select.Int(2)));
  lease.set_attempt(static_cast<int32_t>(select.Int(3)));
  lease.set_master_addr(select.Text(4));
  lease.set_master_port(static_cast<int32_t>(select.Int(5)));
  lease.set_job_id(select.Text(6));
  lease.set_config_json(select.Text(7));
  nlohmann::json inputs = nlohmann::json::parse(select.Text(8), nullptr, false);
  if (inputs.is_array())
    for (const auto& in : inputs) {
      v1::Input* input = lease.add_inputs();
      input->set_field(in.value("field", ""));
      input->set_key(in.value("key", ""));
      input->set_uri(in.value("uri", ""));
      input->set_path(in.value("path", ""));
      input->set_sha256(in.value("sha256", ""));
      input->set_name(in.value("name", ""));
    }
  lease.set_resume_key(select.Text(9));
  lease.set_resume_step(select.Int(10));
  lease.set_world_size(static_cast<int32_t>(select.Int(11) * select.Int(2)));
  lease.set_output_prefix(AttemptOutputPrefix(lease.job_id(), lease.attempt()));
  lease.set_stall_timeout_s(config_.stall_timeout_s);
  ASSIGN_OR_RETURN(
      Statement mark,
      db_->Prepare("UPDATE attempt_ranks SET picked_up = 1 WHERE fence = ? AND worker_id = ?"));
  RETURN_IF_ERROR(mark.Bind(lease.fence()).Bind(worker_id).Run());
  return lease;
}

absl::StatusOr<v1::LeaseJobResponse> Scheduler::LeaseJob(const v1::LeaseJobRequest& request) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max(request.wait_ms(), 0));
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (last_seen_.count(request.worker_id()) == 0)
      return absl::NotFoundError(
          absl::StrCat("worker ", request.worker_id(),
                       " is not registered (or its lease expired); register again"));
    last_seen_[request.worker_id()] = NowSeconds();
    ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*db_));
    RETURN_IF_ERROR(PlaceQueuedJobs());
    ASSIGN_OR_RETURN(std::optional<v1::Lease> lease, PendingLease(request.worker_id()));
    RETURN_IF_ERROR(txn.Commit());
    if (lease.has_value()) {
      v1::LeaseJobResponse response;
      *response.mutable_lease() = std::move(*lease);
      return response;
    }
    if (stopping_) return absl::UnavailableError("the scheduler is shutting down; ask again");
    const uint64_t seen = change_counter_;
    if (!changed_.wait_until(lock, deadline,
                             [&] { return change_counter_ != seen || stopping_.load(); }))
      return v1::LeaseJobResponse();
  }
}

// ---- reports and completion

std::string AttemptOutputPrefix(const std::string& job_id, int attempt) {
  return absl::StrCat("jobs/", job_id, "/attempts/", attempt);
}

absl::Status ValidateAttemptKey(const std::string& key, const std::string& job_id, int attempt,
                                std::string_view what) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  const std::string prefix = AttemptOutputPrefix(job_id, attempt) + "/";
  if (key.rfind(prefix, 0) != 0)
    return absl::PermissionDeniedError(absl::StrCat(AbslView(what), " ", key,
                                                    " is outside the attempt's output prefix ",
                                                    prefix, ": a worker writes only there"));
  return absl::OkStatus();
}

absl::StatusOr<Scheduler::AttemptRef> Scheduler::CurrentAttempt(int64_t fence) {
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare("SELECT a.job_id, a.number, a.active, j.current_fence, j.state "
                                "FROM attempts a JOIN jobs j ON j.id = a.job_id "
                                "WHERE a.fence = ?"));
  select.Bind(fence);
  ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("no attempt has fence ", fence));
  AttemptRef attempt{select.Text(0), static_cast<int>(select.Int(1)), select.Int(2) != 0,
                     static_cast<v1::JobState>(select.Int(4))};
  if (select.Int(3) != fence)
    return absl::FailedPreconditionError(
        absl::StrCat("attempt ", attempt.number, " of job ", attempt.job_id,
                     " was superseded by a newer attempt; its reports and results "
                     "are discarded: stop it"));
  return attempt;
}

absl::StatusOr<v1::ReportEventsResponse> Scheduler::ReportEvents(
    const v1::ReportEventsRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(AttemptRef attempt, CurrentAttempt(request.fence()));
  const std::string& job_id = attempt.job_id;
  const int number = attempt.number;
  v1::ReportEventsResponse response;
  if (!attempt.active) {
    response.set_stop(true);
    return response;
  }
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*db_));
  // Reports up to last_seq were applied by an earlier send of this batch.
  int64_t last_seq = 0;
  if (request.first_seq() > 0) {
    ASSIGN_OR_RETURN(Statement progress,
                     db_->Prepare("SELECT last_seq FROM report_progress WHERE fence = ? AND "
                                  "rank = ?"));
    progress.Bind(request.fence()).Bind(request.rank());
    ASSIGN_OR_RETURN(bool seen, progress.Step());
    if (seen) last_seq = progress.Int(0);
  }
  for (int i = 0; i < request.reports_size(); ++i) {
    const v1::TrainerReport& report = request.reports(i);
    if (request.first_seq() > 0 && request.first_seq() + i <= last_seq) continue;
    if (report.has_event_json()) {
      if (request.rank() == 0)
        RETURN_IF_ERROR(ApplyTrainerEvent(job_id, number, request.fence(), report.event_json()));
    } else {
      v1::JobEvent event;
      event.mutable_log()->set_source(request.rank() == 0 ? "trainer"
                                                          : absl::StrCat("rank ", request.rank()));
      event.mutable_log()->set_line(report.log_line());
      RETURN_IF_ERROR(AppendEvent(job_id, number, std::move(event)));
    }
  }
  if (request.first_seq() > 0 && request.reports_size() > 0) {
    const int64_t sent_up_to = request.first_seq() + request.reports_size() - 1;
    ASSIGN_OR_RETURN(Statement record,
                     db_->Prepare("INSERT INTO report_progress (fence, rank, last_seq) VALUES "
                                  "(?, ?, ?) ON CONFLICT (fence, rank) DO UPDATE SET last_seq = "
                                  "MAX(last_seq, excluded.last_seq)"));
    RETURN_IF_ERROR(record.Bind(request.fence()).Bind(request.rank()).Bind(sent_up_to).Run());
  }
  ASSIGN_OR_RETURN(Statement touch,
                   db_->Prepare("UPDATE attempts SET last_report_at = ? WHERE fence = ?"));
  RETURN_IF_ERROR(touch.Bind(NowSeconds()).Bind(request.fence()).Run());
  RETURN_IF_ERROR(txn.Commit());
  return response;
}

absl::Status Scheduler::CompleteAttempt(const v1::CompleteAttemptRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(AttemptRef attempt, CurrentAttempt(request.fence()));
  const std::string& job_id = attempt.job_id;
  const int number = attempt.number;
  if (!attempt.active)
    return absl::OkStatus();  // already ended (cancelled, or another rank failed it)
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*db_));
  for (const std::string& line : request.stderr_tail()) {
    v1::JobEvent event;
    event.mutable_log()->set_source(
        request.rank() == 0 ? "stderr" : absl::StrCat("stderr rank ", request.rank()));
    event.mutable_log()->set_line(line);
    RETURN_IF_ERROR(AppendEvent(job_id, number, std::move(event)));
  }
  if (!request.succeeded()) {
    const Failure failure = request.permanent()        ? Failure::kPermanent
                            : request.infrastructure() ? Failure::kInfrastructure
                                                       : Failure::kTrainer;
    RETURN_IF_ERROR(FailAttempt(request.fence(),
                                request.reason().empty() ? "the trainer failed" : request.reason(),
                                failure));
    RETURN_IF_ERROR(txn.Commit());
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(Statement done,
                   db_->Prepare("UPDATE attempt_ranks SET done = 1 WHERE fence = ? AND first_rank "
                                "<= ? AND first_rank + local_ranks > ?"));
  RETURN_IF_ERROR(done.Bind(request.fence()).Bind(request.rank()).Bind(request.rank()).Run());
  if (request.rank() == 0) {
    if (request.artifacts().empty())
      return absl::InvalidArgumentError(
          "artifacts: rank 0 of a successful attempt must list what it uploaded");
    for (const v1::UploadedArtifact& artifact : request.artifacts()) {
      RETURN_IF_ERROR(ValidateRelativePath(artifact.name(), "artifacts.name"));
      RETURN_IF_ERROR(ValidateAttemptKey(artifact.key(), job_id, number, "artifacts.key"));
      ASSIGN_OR_RETURN(Statement insert,
                       db_->Prepare("INSERT OR REPLACE INTO artifacts (job_id, name, storage_key, "
                                    "size_bytes, sha256) VALUES (?, ?, ?, ?, ?)"));
      RETURN_IF_ERROR(insert.Bind(job_id)
                          .Bind(artifact.name())
                          .Bind(artifact.key())
                          .Bind(artifact.size_bytes())
                          .Bind(artifact.sha256())
                          .Run());
    }
    ASSIGN_OR_RETURN(Statement end,
                     db_->Prepare("UPDATE attempts SET active = 0, ended_at = ? WHERE fence = ?"));
    RETURN_IF_ERROR(end.Bind(NowSeconds()).Bind(request.fence()).Run());
    RETURN_IF_ERROR(SetState(
        job_id, attempt.job_state, v1::JOB_STATE_SUCCEEDED,
        absl::StrCat("attempt ", number, " stored ", request.artifacts_size(), " artifacts")));
  }
  RETURN_IF_ERROR(txn.Commit());
  return absl::OkStatus();
}

absl::Status Scheduler::FailAttempt(int64_t fence, const std::string& reason, Failure failure) {
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare("SELECT a.job_id, a.number, a.active, j.state, j.attempts, "
                                "j.max_retries, j.infrastructure_failures FROM attempts a "
                                "JOIN jobs j ON j.id = a.job_id WHERE a.fence = ?"));
  select.Bind(fence);
  ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found || select.Int(2) == 0) return absl::OkStatus();
  const std::string job_id = select.Text(0);
  const int number = static_cast<int>(select.Int(1));
  const auto state = static_cast<v1::JobState>(select.Int(3));
  const int64_t attempts = select.Int(4), max_retries = select.Int(5);
  int64_t infrastructure = select.Int(6);
  ASSIGN_OR_RETURN(
      Statement end,
      db_->Prepare("UPDATE attempts SET active = 0, ended_at = ?, reason = ? WHERE fence = ?"));
  RETURN_IF_ERROR(end.Bind(NowSeconds()).Bind(reason).Bind(fence).Run());
  if (state != v1::JOB_STATE_ASSIGNED && state != v1::JOB_STATE_RUNNING) return absl::OkStatus();
  const std::string failed = absl::StrCat("attempt ", number, " failed: ", reason);
  switch (failure) {
    case Failure::kPermanent:
      return SetState(job_id, state, v1::JOB_STATE_FAILED,
                      absl::StrCat(failed, " (retrying cannot help)"));
    case Failure::kInfrastructure: {
      ASSIGN_OR_RETURN(Statement count, db_->Prepare("UPDATE jobs SET infrastructure_failures = "
                                                     "infrastructure_failures + 1 WHERE id = ?"));
      RETURN_IF_ERROR(count.Bind(job_id).Run());
      ++infrastructure;
      if (infrastructure > config_.max_infrastructure_retries)
        return SetState(job_id, state, v1::JOB_STATE_FAILED,
                        absl::StrCat(failed, "; lost to the fleet ", infrastructure,
                                     " times, more than --max-infrastructure-retries ",
                                     config_.max_infrastructure_retries));
      return SetState(job_id, state, v1::JOB_STATE_QUEUED,
                      absl::StrCat(failed, "; retrying (not the job's fault: its ", max_retries,
                                   " retries are untouched)"));
    }
    case Failure::kTrainer:
      break;
  }
  // Attempts the fleet lost do not count against the job.
  const int64_t own_attempts = attempts - infrastructure;
  if (own_attempts > max_retries)
    return SetState(job_id, state, v1::JOB_STATE_FAILED,
                    absl::StrCat(failed, "; no retries left (max_retries ", max_retries, ")"));
  return SetState(
      job_id, state, v1::JOB_STATE_QUEUED,
      absl::StrCat(failed, "; retrying (attempt ", own_attempts + 1, " of ", max_retries + 1, ")"));
}

// ---- periodic checks

absl::Status Scheduler::LoseWorker(const std::string& id, const std::string& reason) {
  last_seen_.erase(id);
  ASSIGN_OR_RETURN(Statement lose, db_->Prepare("UPDATE workers SET lost = 1 WHERE id = ?"));
  RETURN_IF_ERROR(lose.Bind(id).Run());
  ASSIGN_OR_RETURN(Statement fences,
                   db_->Prepare("SELECT a.fence FROM attempt_ranks r JOIN attempts a ON a.fence = "
                                "r.fence WHERE r.worker_id = ? AND a.active = 1"));
  fences.Bind(id);
  ASSIGN_OR_RETURN(std::vector<int64_t> to_fail, FirstColumnInts(fences));
  for (int64_t fence : to_fail)
    RETURN_IF_ERROR(FailAttempt(fence, reason, Failure::kInfrastructure));
  return absl::OkStatus();
}

absl::Status Scheduler::ExpireWorkers(double now) {
  std::vector<std::string> expired;
  for (const auto& [id, seen] : last_seen_)
    if (now - seen > config_.lease_timeout_s) expired.push_back(id);
  for (const std::string& id : expired) {
    ASSIGN_OR_RETURN(Statement name, db_->Prepare("SELECT name FROM workers WHERE id = ?"));
    name.Bind(id);
    ASSIGN_OR_RETURN(bool row, name.Step());
    RETURN_IF_ERROR(
        LoseWorker(id, absl::StrFormat("worker %s sent no heartbeat for %.0f s (lease expired)",
                                       row ? name.Text(0) : id, config_.lease_timeout_s)));
  }
  return absl::OkStatus();
}

absl::Status Scheduler::DetectStalls(double now) {
  ASSIGN_OR_RETURN(
      Statement select,
      db_->Prepare("SELECT fence FROM attempts WHERE active = 1 AND last_report_at < ?"));
  select.Bind(now - config_.stall_timeout_s);
  ASSIGN_OR_RETURN(std::vector<int64_t> stalled, FirstColumnInts(select));
  for (int64_t fence : stalled)
    RETURN_IF_ERROR(FailAttempt(fence,
                                absl::StrFormat("the trainer reported nothing for %.0f s (stalled)",
                                                config_.stall_timeout_s),
                                Failure::kTrainer));
  return absl::OkStatus();
}

absl::Status Scheduler::Tick() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!db_->writable()) RETURN_IF_ERROR(db_->ProbeWrite());
  const double now = NowSeconds();
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*db_));
  RETURN_IF_ERROR(ExpireWorkers(now));
  RETURN_IF_ERROR(DetectStalls(now));
  RETURN_IF_ERROR(PlaceQueuedJobs());
  return txn.Commit();
}

v1::WorkerInfo Scheduler::WorkerInfoOf(const Statement& row, bool show_token, double now) const {
  v1::WorkerInfo w;
  w.set_id(row.Text(0));
  w.set_name(row.Text(1));
  w.set_host(row.Text(2));
  w.set_devices(static_cast<int32_t>(row.Int(3)));
  w.set_device_kind(row.Text(4));
  w.set_memory_bytes(row.Int(5));
  const bool alive = row.Int(6) == 0 && WorkerAlive(w.id(), now);
  w.set_status(row.Int(7) != 0 ? "revoked" : alive ? "alive" : "lost");
  if (show_token) w.set_token_id(row.Text(8));
  auto seen = last_seen_.find(w.id());
  if (seen != last_seen_.end()) w.set_last_heartbeat(seen->second);
  return w;
}

absl::StatusOr<v1::ListWorkersResponse> Scheduler::ListWorkers(const std::string& tenant,
                                                               bool all_tenants) {
  std::lock_guard<std::mutex> lock(mu_);
  const double now = NowSeconds();
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare(absl::StrCat("SELECT ", kWorkerInfoColumns,
                                             " FROM workers WHERE lost = 0 OR registered_at > ? "
                                             "ORDER BY name, registered_at")));
  select.Bind(now - 86400);
  v1::ListWorkersResponse response;
  while (true) {
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    v1::WorkerInfo* w = response.add_workers();
    *w = WorkerInfoOf(select, all_tenants, now);
    ASSIGN_OR_RETURN(Statement jobs,
                     db_->Prepare("SELECT a.job_id, j.tenant FROM attempt_ranks r JOIN attempts a "
                                  "ON a.fence = r.fence JOIN jobs j ON j.id = a.job_id "
                                  "WHERE r.worker_id = ? AND a.active = 1"));
    jobs.Bind(w->id());
    while (true) {
      ASSIGN_OR_RETURN(bool more, jobs.Step());
      if (!more) break;
      if (all_tenants || jobs.Text(1) == tenant)
        w->add_running_jobs(jobs.Text(0));
      else
        w->set_other_jobs(w->other_jobs() + 1);
    }
  }
  return response;
}

absl::StatusOr<Scheduler::Snapshot> Scheduler::TakeSnapshot(double finished_after) {
  std::lock_guard<std::mutex> lock(mu_);
  Snapshot snapshot;
  ASSIGN_OR_RETURN(Statement counts,
                   db_->Prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state"));
  while (true) {
    ASSIGN_OR_RETURN(bool row, counts.Step());
    if (!row) break;
    snapshot.jobs_by_state[static_cast<int>(counts.Int(0))] = counts.Int(1);
  }
  const double now = NowSeconds();
  for (const auto& [id, seen] : last_seen_)
    if (now - seen <= config_.lease_timeout_s) ++snapshot.workers_alive;
  ASSIGN_OR_RETURN(Statement running,
                   db_->Prepare("SELECT id, name, step, total_steps, loss, tokens_per_s, lr, "
                                "eval_loss, peak_rss_bytes FROM jobs WHERE state = 3"));
  while (true) {
    ASSIGN_OR_RETURN(bool row, running.Step());
    if (!row) break;
    v1::Job& job = snapshot.running.emplace_back();
    job.set_id(running.Text(0));
    job.set_name(running.Text(1));
    job.set_step(running.Int(2));
    job.set_total_steps(running.Int(3));
    job.set_loss(running.Double(4));
    job.set_tokens_per_s(running.Double(5));
    job.set_lr(running.Double(6));
    job.set_eval_loss(running.Double(7));
    job.set_peak_rss_bytes(running.Int(8));
  }
  ASSIGN_OR_RETURN(
      Statement finished,
      db_->Prepare(
          "SELECT state, created_at, started_at, finished_at FROM jobs WHERE finished_at > ?"));
  finished.Bind(finished_after);
  while (true) {
    ASSIGN_OR_RETURN(bool row, finished.Step());
    if (!row) break;
    v1::Job& job = snapshot.finished.emplace_back();
    job.set_state(static_cast<v1::JobState>(finished.Int(0)));
    job.set_created_at(static_cast<int64_t>(finished.Double(1)));
    job.set_started_at(static_cast<int64_t>(finished.Double(2)));
    job.set_finished_at(static_cast<int64_t>(finished.Double(3)));
  }
  ASSIGN_OR_RETURN(Statement oldest,
                   db_->Prepare("SELECT MIN(created_at) FROM jobs WHERE state = 1"));
  ASSIGN_OR_RETURN(bool row, oldest.Step());
  if (row && !oldest.IsNull(0)) snapshot.oldest_queued_wait_s = now - oldest.Double(0);
  snapshot.trainer_errors = trainer_errors_;
  return snapshot;
}

}  // namespace diablo::server
