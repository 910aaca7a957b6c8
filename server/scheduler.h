// The scheduler's core: the job state machine, placement, leases and the
// event log, all persisted in SQLite.  The gRPC services are thin wrappers
// that authenticate, validate and translate; every decision is made here,
// under one mutex, in one transaction per change, so a crash at any moment
// leaves the store consistent (see docs/service.md, "Jobs and attempts").
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/object_store.h"
#include "diablo/v1/file.pb.h"
#include "diablo/v1/job.pb.h"
#include "diablo/v1/worker.pb.h"
#include "server/db.h"
#include "server/quotas.h"

namespace diablo::server {

// Retries of a job whose request leaves max_retries unset.
inline constexpr int kDefaultMaxRetries = 2;

struct SchedulerConfig {
  std::string storage_uri;
  double heartbeat_interval_s = 5;
  // A worker silent for this long loses its lease; its attempts are retried elsewhere.
  double lease_timeout_s = 30;
  // An attempt whose trainer reports nothing for this long is failed and retried.
  double stall_timeout_s = 600;
  int max_queued_jobs_per_tenant = 1000;
  // The other per-tenant limits (server/quotas.h; 0: none): uploaded bytes
  // and files held, uploads in progress, running jobs.  Their queued_jobs is
  // ignored: max_queued_jobs_per_tenant is that default.
  TenantLimits tenant_limits;
  // The --quotas file: per-tenant overrides of all of these.
  QuotaOverrides quotas;
  // Attempts a job may lose to the fleet (a lost or restarted worker, an
  // expired lease, a lost lease reply, a worker drained) before it fails.
  // These never spend the job's own max_retries, which count only failures
  // of its trainer.
  int max_infrastructure_retries = 20;
  // Rendezvous ports handed to gangs: base + fence % range.
  int rendezvous_port_base = 29500;
  int rendezvous_port_range = 1000;
};

// What spec validation resolved for a new job (server/spec_validation.h).
struct ValidatedJob {
  std::string spec_json;    // the JobSpec as submitted, JSON
  std::string config_json;  // the trainer's config
  std::vector<v1::Input> inputs;
  int64_t estimated_bytes = 0;
  bool needs_cuda = false;
};

// What a job needs of a node, for placement and for the submit-time check.
struct Requirements {
  int nodes = 1;
  int devices_per_node = 1;
  int64_t bytes_per_rank = 0;
  bool needs_cuda = false;
};

struct ArtifactRow {
  std::string name, storage_key, sha256;
  int64_t size_bytes = 0;
};

struct FileRow {
  v1::File file;
  std::string storage_key;
};

class Scheduler {
 public:
  static absl::StatusOr<std::unique_ptr<Scheduler>> Open(std::unique_ptr<Db> db,
                                                         std::unique_ptr<ObjectStore> storage,
                                                         SchedulerConfig config);
  ~Scheduler();

  ObjectStore& storage() { return *storage_; }
  const SchedulerConfig& config() const { return config_; }
  // False while the store cannot write (a full or failing disk); Tick()
  // probes it until a write succeeds again.
  bool store_writable() const { return db_->writable(); }

  // ---- jobs (always scoped to a tenant; another tenant's job is NOT_FOUND)
  absl::StatusOr<v1::Job> CreateJob(const std::string& tenant, const v1::CreateJobRequest& request,
                                    const ValidatedJob& job);
  // The job an identical CreateJob with this request's idempotency key
  // already made, if any (NOT_FOUND otherwise), so a retried submit skips
  // validation; INVALID_ARGUMENT when the key was used for a different
  // request.
  absl::StatusOr<v1::Job> FindByIdempotencyKey(const std::string& tenant,
                                               const v1::CreateJobRequest& request);
  absl::StatusOr<v1::Job> GetJob(const std::string& tenant, const std::string& id);
  absl::StatusOr<v1::ListJobsResponse> ListJobs(const std::string& tenant,
                                                const v1::ListJobsRequest& request);
  absl::StatusOr<v1::Job> CancelJob(const std::string& tenant, const std::string& id,
                                    const std::string& reason);
  // Events with seq > after_seq (at most `limit`); `finished` says the job is
  // in a final state, so no event will follow the returned ones.
  absl::StatusOr<std::vector<v1::JobEvent>> EventsAfter(const std::string& tenant,
                                                        const std::string& id, int64_t after_seq,
                                                        int limit, bool* finished);
  // Blocks until something changes anywhere or `timeout_ms` passes.
  void WaitForChange(int timeout_ms);
  absl::StatusOr<std::vector<ArtifactRow>> ListArtifacts(const std::string& tenant,
                                                         const std::string& id);
  // OK when some registered worker could run a job with these needs;
  // FAILED_PRECONDITION saying what is missing otherwise.
  absl::Status CheckPlaceable(const Requirements& needs);

  // ---- uploaded files
  // `tenant`'s limits: the defaults with its --quotas entry applied.
  TenantLimits LimitsFor(std::string_view tenant) const;
  // An upload whose header just arrived, before any of its data is read:
  // RESOURCE_EXHAUSTED (saying which limit, the usage and what to do) when
  // the tenant has its maximum of uploads in progress, or when `size_bytes`
  // more, with what its files and its other uploads in progress hold, would
  // pass its byte or file quota.  The slot is the upload's place among the
  // tenant's concurrent uploads until it goes, whatever way the upload ends.
  absl::StatusOr<UploadTracker::Slot> BeginUpload(const std::string& tenant, int64_t size_bytes);
  // Records a stored upload; checks the byte and file quotas again in the
  // same step, so uploads racing past BeginUpload cannot pass them together.
  absl::StatusOr<v1::File> AddFile(const std::string& tenant, const v1::UploadHeader& header,
                                   const std::string& storage_key);
  absl::StatusOr<FileRow> GetFile(const std::string& tenant, const std::string& id);
  absl::StatusOr<v1::File> FindFile(const std::string& tenant, const std::string& sha256);
  absl::StatusOr<v1::ListFilesResponse> ListFiles(const std::string& tenant,
                                                  const v1::ListFilesRequest& request);
  absl::Status DeleteFile(const std::string& tenant, const std::string& id);

  // ---- workers
  // `token_id` is the worker token's: only that token may register the same
  // name again while this worker lives.  The response holds the credential
  // every later call of this worker must carry (AuthenticateWorker).
  absl::StatusOr<v1::RegisterWorkerResponse> RegisterWorker(
      const v1::RegisterWorkerRequest& request, const std::string& token_id);
  // The worker a call acts as: the one `credential` was issued to, which
  // must have registered with `token_id`.  UNAUTHENTICATED for a missing or
  // unknown credential, PERMISSION_DENIED for a revoked worker or another
  // token's credential.
  absl::StatusOr<std::string> AuthenticateWorker(const std::string& token_id,
                                                 std::string_view credential);
  // OK when `rank` of the attempt `fence` was leased to `worker_id` (its
  // current attempt or an old one); PERMISSION_DENIED otherwise, so one
  // worker can neither report nor complete for another.
  absl::Status CheckLeasedTo(const std::string& worker_id, int64_t fence, int rank);
  // An admin's eviction: the worker's credential stops working, its
  // attempts are retried elsewhere as infrastructure failures, and its
  // token may not register its name again.  NOT_FOUND for an unknown id.
  absl::StatusOr<v1::WorkerInfo> RevokeWorker(const std::string& worker_id,
                                              const std::string& reason);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request);
  absl::StatusOr<v1::LeaseJobResponse> LeaseJob(const v1::LeaseJobRequest& request);
  absl::StatusOr<v1::ReportEventsResponse> ReportEvents(const v1::ReportEventsRequest& request);
  absl::Status CompleteAttempt(const v1::CompleteAttemptRequest& request);
  // The fleet as `tenant` may see it: its own running jobs by id, other
  // tenants' only as a count (`all_tenants`, for admins, names them all).
  absl::StatusOr<v1::ListWorkersResponse> ListWorkers(const std::string& tenant, bool all_tenants);

  // Wakes every long poll and watch so that a shutting-down server is not
  // held up by them; they answer UNAVAILABLE and clients come back later.
  void BeginShutdown();
  bool stopping() const { return stopping_.load(); }

  // Expires silent workers and stalled attempts, then places queued jobs.
  // The server calls it every second; tests call it directly.
  absl::Status Tick();

  // What the metrics show: jobs by state, alive workers, the progress of
  // running jobs, the jobs that reached a final state after
  // `finished_after`, the wait of the oldest queued job, and trainer errors.
  struct Snapshot {
    std::map<int, int64_t> jobs_by_state;
    int64_t workers_alive = 0;
    std::vector<v1::Job>
        running;  // id, name, step, total_steps, loss, tokens_per_s, lr, eval_loss, peak_rss_bytes
    std::vector<v1::Job> finished;  // state, created_at, started_at, finished_at
    double oldest_queued_wait_s = 0;
    std::map<std::string, int64_t> trainer_errors;  // by error code, since the scheduler started
  };
  absl::StatusOr<Snapshot> TakeSnapshot(double finished_after);

 private:
  Scheduler(std::unique_ptr<Db> db, std::unique_ptr<ObjectStore> storage, SchedulerConfig config);

  // All of these expect mu_ held (and most a transaction open).
  // The id of the job made with idempotency `key` (nullopt: none, or no
  // key); INVALID_ARGUMENT when that job came from a request with another
  // RequestFingerprint.
  absl::StatusOr<std::optional<std::string>> JobForIdempotencyKey(const std::string& tenant,
                                                                  const std::string& key,
                                                                  const std::string& fingerprint);
  struct AttemptRef {
    std::string job_id;
    int number = 0;
    bool active = false;
    v1::JobState job_state = v1::JOB_STATE_UNSPECIFIED;
  };
  // The attempt a fence names, if it is its job's current one: NOT_FOUND for
  // an unknown fence, FAILED_PRECONDITION for a superseded attempt.
  absl::StatusOr<AttemptRef> CurrentAttempt(int64_t fence);
  absl::StatusOr<v1::Job> LoadJob(const std::string& tenant, const std::string& id);
  absl::Status AppendEvent(const std::string& job_id, int attempt, v1::JobEvent event);
  absl::Status SetState(const std::string& job_id, v1::JobState from, v1::JobState to,
                        const std::string& reason);
  // Who an attempt's failure is on: its trainer (a retry spends the job's
  // max_retries), its trainer for good (no retry), or the fleet (a retry
  // spends max_infrastructure_retries instead).
  enum class Failure { kTrainer, kPermanent, kInfrastructure };
  absl::Status FailAttempt(int64_t fence, const std::string& reason, Failure failure);
  // Marks a worker lost and fails the attempts it had a part in.
  absl::Status LoseWorker(const std::string& worker_id, const std::string& reason);
  absl::Status ExpireWorkers(double now);
  absl::Status DetectStalls(double now);
  absl::Status PlaceQueuedJobs();
  // PERMISSION_DENIED when the worker name is revoked for `token_id`, or is
  // held by a live worker another token registered.
  absl::Status CheckNameFreeFor(const std::string& name, const std::string& token_id, double now);
  absl::StatusOr<std::optional<v1::Lease>> PendingLease(const std::string& worker_id);
  absl::Status ApplyTrainerEvent(const std::string& job_id, int attempt, int64_t fence,
                                 const std::string& json);
  bool WorkerAlive(const std::string& worker_id, double now) const;
  // A row of "SELECT <kWorkerInfoColumns> FROM workers" as a WorkerInfo
  // (without its jobs); the token id only when `show_token` (admins).
  static constexpr const char* kWorkerInfoColumns =
      "id, name, host, devices, device_kind, memory_bytes, lost, revoked_at IS NOT NULL, token_id";
  v1::WorkerInfo WorkerInfoOf(const Statement& row, bool show_token, double now) const;
  void NotifyChange();

  // What `tenant`'s uploaded files hold, by the store.
  struct FileUsage {
    int64_t files = 0;
    int64_t bytes = 0;
  };
  absl::StatusOr<FileUsage> FilesHeldBy(const std::string& tenant);

  std::unique_ptr<Db> db_;
  std::unique_ptr<ObjectStore> storage_;
  SchedulerConfig config_;
  // Uploads in progress per tenant; acquired under mu_ (BeginUpload).
  UploadTracker uploads_;

  std::mutex mu_;
  std::condition_variable changed_;
  uint64_t change_counter_ = 0;
  // Last heartbeat per worker id (memory only: after a restart every known
  // worker gets a full lease timeout to check in again).
  std::map<std::string, double> last_seen_;
  // Workers that said they are shutting down: alive, but not placed on.
  std::set<std::string> draining_;
  // Trainer error events by code since start (for the metrics).
  std::map<std::string, int64_t> trainer_errors_;
  double started_at_ = 0;
  std::atomic<bool> stopping_{false};
};

// Unix time in seconds (fractional).
double NowSeconds();
// A new random id with a prefix: "j-3f9c0a1b2c4d5e6f".
std::string NewId(const char* prefix);
// A new secret with a prefix and 256 bits from the system's random device
// (tokens, worker credentials); only its SHA-256 is ever stored.
std::string NewSecret(const char* prefix);
// SHA-256 of a CreateJobRequest without its idempotency key, serialised
// deterministically: equal for a retried request, different for any change.
std::string RequestFingerprint(const v1::CreateJobRequest& request);

// Where attempt `attempt` of a job writes its checkpoints and outputs
// ("jobs/<id>/attempts/<n>"), as its lease tells the worker.
std::string AttemptOutputPrefix(const std::string& job_id, int attempt);
// A storage key a worker reports for that attempt (artifact, checkpoint):
// a valid object key under AttemptOutputPrefix, else PERMISSION_DENIED
// naming `what`, so one attempt can never publish another's objects.
absl::Status ValidateAttemptKey(const std::string& key, const std::string& job_id, int attempt,
                                std::string_view what);

}  // namespace diablo::server
