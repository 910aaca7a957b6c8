// Schema migrations of the scheduler's SQLite store.  Append new entries;
// never edit one that has shipped.
#include "server/migrations.h"

#include <iterator>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace diablo::server {
namespace {

constexpr const char* kMigrations[] = {
    // 1: the first schema.
    R"sql(
CREATE TABLE tokens (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('user', 'worker', 'admin')),
  hash TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL DEFAULT '',
  created_at REAL NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE workers (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  host TEXT NOT NULL,
  devices INTEGER NOT NULL,
  device_kind TEXT NOT NULL,
  memory_bytes INTEGER NOT NULL,
  version TEXT NOT NULL,
  registered_at REAL NOT NULL,
  lost INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE jobs (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  labels TEXT NOT NULL,          -- JSON object
  spec TEXT NOT NULL,            -- JobSpec as JSON
  config TEXT NOT NULL,          -- the trainer's config JSON
  inputs TEXT NOT NULL,          -- JSON list of resolved inputs
  priority INTEGER NOT NULL,
  devices_per_node INTEGER NOT NULL,
  nodes INTEGER NOT NULL,
  max_retries INTEGER NOT NULL,
  idempotency_key TEXT,
  estimated_bytes INTEGER NOT NULL,
  state INTEGER NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  attempts INTEGER NOT NULL DEFAULT 0,
  current_fence INTEGER NOT NULL DEFAULT 0,
  created_at REAL NOT NULL,
  started_at REAL NOT NULL DEFAULT 0,
  finished_at REAL NOT NULL DEFAULT 0,
  step INTEGER NOT NULL DEFAULT 0,
  total_steps INTEGER NOT NULL DEFAULT 0,
  loss REAL NOT NULL DEFAULT 0,
  tokens_per_s REAL NOT NULL DEFAULT 0,
  eta_s REAL NOT NULL DEFAULT 0,
  checkpoint_step INTEGER NOT NULL DEFAULT 0,
  checkpoint_key TEXT NOT NULL DEFAULT '',
  last_seq INTEGER NOT NULL DEFAULT 0,
  UNIQUE (tenant, idempotency_key)
);
CREATE INDEX jobs_by_state ON jobs (state, priority DESC, created_at);
CREATE INDEX jobs_by_tenant ON jobs (tenant, created_at DESC);
CREATE TABLE attempts (
  fence INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL REFERENCES jobs (id),
  number INTEGER NOT NULL,
  active INTEGER NOT NULL DEFAULT 1,
  started_at REAL NOT NULL,
  ended_at REAL NOT NULL DEFAULT 0,
  last_report_at REAL NOT NULL,
  master_addr TEXT NOT NULL,
  master_port INTEGER NOT NULL,
  reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX attempts_active ON attempts (active);
CREATE TABLE attempt_ranks (
  fence INTEGER NOT NULL REFERENCES attempts (fence),
  worker_id TEXT NOT NULL REFERENCES workers (id),
  first_rank INTEGER NOT NULL,
  local_ranks INTEGER NOT NULL,
  picked_up INTEGER NOT NULL DEFAULT 0,
  done INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (fence, worker_id)
);
CREATE TABLE events (
  job_id TEXT NOT NULL REFERENCES jobs (id),
  seq INTEGER NOT NULL,
  event TEXT NOT NULL,           -- JobEvent as JSON
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE files (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  name TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  storage_key TEXT NOT NULL,
  created_at REAL NOT NULL
);
CREATE INDEX files_by_hash ON files (tenant, sha256);
CREATE TABLE artifacts (
  job_id TEXT NOT NULL REFERENCES jobs (id),
  name TEXT NOT NULL,
  storage_key TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  PRIMARY KEY (job_id, name)
);
)sql",
    // 2: more progress for the per-job dashboard.
    R"sql(
ALTER TABLE jobs ADD COLUMN lr REAL NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN eval_loss REAL NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN peak_rss_bytes INTEGER NOT NULL DEFAULT 0;
)sql",
    // 3: what an idempotency key was used for (RequestFingerprint), so a
    // reused key with a different request is refused rather than answered
    // with the first job.  Empty for jobs created before.
    R"sql(
ALTER TABLE jobs ADD COLUMN request_sha256 TEXT NOT NULL DEFAULT '';
)sql",
    // 4: attempts lost to the fleet rather than to the job's trainer, which
    // do not spend the job's max_retries.
    R"sql(
ALTER TABLE jobs ADD COLUMN infrastructure_failures INTEGER NOT NULL DEFAULT 0;
)sql",
    // 5: the last report sequence number applied per attempt and rank, so a
    // ReportEvents batch sent again after a lost reply is recorded once.
    R"sql(
CREATE TABLE report_progress (
  fence INTEGER NOT NULL,
  rank INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  PRIMARY KEY (fence, rank)
);
)sql",
    // 6: worker identity.  The token that registered a worker (only it may
    // register that name again), the SHA-256 of the credential its calls
    // carry, and when an admin revoked it.
    R"sql(
ALTER TABLE workers ADD COLUMN token_id TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN credential_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN revoked_at REAL;
CREATE INDEX workers_by_credential ON workers (credential_sha256);
)sql",
};

}  // namespace

int LatestSchemaVersion() { return static_cast<int>(std::size(kMigrations)); }

absl::Status Migrate(Db& db) {
  RETURN_IF_ERROR(db.Exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"));
  int version = 0;
  {
    ASSIGN_OR_RETURN(Statement read, db.Prepare("SELECT version FROM schema_version"));
    ASSIGN_OR_RETURN(bool row, read.Step());
    if (row) version = static_cast<int>(read.Int(0));
  }
  if (version > LatestSchemaVersion())
    return absl::FailedPreconditionError(absl::StrCat(
        "the database has schema version ", version, " but this diablo-scheduler knows only up to ",
        LatestSchemaVersion(), "; run a newer diablo-scheduler (downgrades are not supported)"));
  for (; version < LatestSchemaVersion(); ++version) {
    ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(db));
    RETURN_IF_ERROR(db.Exec(kMigrations[version]));
    RETURN_IF_ERROR(db.Exec("DELETE FROM schema_version"));
    RETURN_IF_ERROR(db.Exec(absl::StrCat("INSERT INTO schema_version VALUES (", version + 1, ")")));
    RETURN_IF_ERROR(txn.Commit());
  }
  return absl::OkStatus();
}

}  // namespace diablo::server
