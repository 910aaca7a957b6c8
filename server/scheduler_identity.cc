// Scheduler: who a worker call comes from.  A worker token registers a
// worker and gets a credential for it; every later call carries both and may
// act only as that worker, on the fences and ranks leased to it.  An admin
// can revoke a worker (docs/security.md, "Worker identity").
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "server/scheduler.h"

namespace diablo::server {

absl::Status Scheduler::CheckNameFreeFor(const std::string& name, const std::string& token_id,
                                         double now) {
  ASSIGN_OR_RETURN(Statement revoked,
                   db_->Prepare("SELECT id FROM workers WHERE name = ? AND token_id = ? AND "
                                "revoked_at IS NOT NULL LIMIT 1"));
  revoked.Bind(name).Bind(token_id);
  ASSIGN_OR_RETURN(bool was_revoked, revoked.Step());
  if (was_revoked)
    return absl::PermissionDeniedError(absl::StrCat(
        "worker name \"", name, "\": an admin revoked worker ", revoked.Text(0),
        " of this name registered with this token; the token may not register it again. Give the "
        "node a new worker token (diablo-scheduler token create --role worker)"));
  // Another token's live worker of this name would be replaced (and its
  // attempts failed) by this registration: one token could evict the
  // workers of another.  Rows from before worker identity have no token.
  ASSIGN_OR_RETURN(Statement held, db_->Prepare("SELECT id, token_id FROM workers WHERE name = ? "
                                                "AND lost = 0 AND token_id != ''"));
  held.Bind(name);
  while (true) {
    ASSIGN_OR_RETURN(bool row, held.Step());
    if (!row) break;
    if (held.Text(1) != token_id && WorkerAlive(held.Text(0), now))
      return absl::PermissionDeniedError(absl::StrFormat(
          "worker name \"%s\" is held by live worker %s, registered with another token; a token "
          "may replace only the workers it registered (give each node its own worker token), "
          "or register once that worker has sent no heartbeat for %.0f s",
          name, held.Text(0), config_.lease_timeout_s));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Scheduler::AuthenticateWorker(const std::string& token_id,
                                                          std::string_view credential) {
  if (credential.empty())
    return absl::UnauthenticatedError(
        "missing worker credential: send the credential RegisterWorker returned as "
        "\"diablo-worker-credential\" metadata");
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare("SELECT id, token_id, revoked_at IS NOT NULL FROM workers WHERE "
                                "credential_sha256 = ?"));
  select.Bind(Sha256Hex(credential));
  ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return absl::UnauthenticatedError("unknown worker credential: register again");
  const std::string worker_id = select.Text(0);
  if (select.Int(2) != 0)
    return absl::PermissionDeniedError(
        absl::StrCat("worker ", worker_id, " was revoked by an admin"));
  if (select.Text(1) != token_id)
    return absl::PermissionDeniedError(
        absl::StrCat("the credential of worker ", worker_id,
                     " was issued to another token; register with this token instead"));
  return worker_id;
}

absl::Status Scheduler::CheckLeasedTo(const std::string& worker_id, int64_t fence, int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare("SELECT 1 FROM attempt_ranks WHERE fence = ? AND worker_id = ? AND "
                                "? >= first_rank AND ? < first_rank + local_ranks"));
  select.Bind(fence).Bind(worker_id).Bind(rank).Bind(rank);
  ASSIGN_OR_RETURN(bool leased, select.Step());
  // The same answer for another worker's fence and for no fence at all, so
  // a caller learns nothing about attempts that are not its own.
  if (!leased)
    return absl::PermissionDeniedError(
        absl::StrCat("fence ", fence, " rank ", rank, " was not leased to worker ", worker_id));
  return absl::OkStatus();
}

absl::StatusOr<v1::WorkerInfo> Scheduler::RevokeWorker(const std::string& worker_id,
                                                       const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*db_));
  ASSIGN_OR_RETURN(Statement revoke,
                   db_->Prepare("UPDATE workers SET revoked_at = ? WHERE id = ? AND "
                                "revoked_at IS NULL"));
  RETURN_IF_ERROR(revoke.Bind(NowSeconds()).Bind(worker_id).Run());
  const bool newly_revoked = db_->Changes() > 0;  // revoking twice changes nothing more
  ASSIGN_OR_RETURN(Statement select, db_->Prepare(absl::StrCat("SELECT ", kWorkerInfoColumns,
                                                               " FROM workers WHERE id = ?")));
  select.Bind(worker_id);
  ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("no worker ", worker_id));
  const v1::WorkerInfo info = WorkerInfoOf(select, /*show_token=*/true, NowSeconds());
  if (!newly_revoked) return info;
  RETURN_IF_ERROR(
      LoseWorker(worker_id, absl::StrCat("worker ", info.name(), " was revoked by an admin",
                                         reason.empty() ? "" : ": ", reason)));
  draining_.erase(worker_id);
  RETURN_IF_ERROR(PlaceQueuedJobs());
  RETURN_IF_ERROR(txn.Commit());
  NotifyChange();
  return info;
}

}  // namespace diablo::server
