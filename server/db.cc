// SQLite wrapper used by the scheduler's store.
#include "server/db.h"

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace diablo::server {

absl::StatusOr<std::unique_ptr<Db>> Db::Open(const std::string& path) {
  sqlite3* handle = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &handle,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = handle ? sqlite3_errmsg(handle) : sqlite3_errstr(rc);
    sqlite3_close(handle);
    return absl::UnavailableError(absl::StrCat("cannot open database ", path, ": ", message));
  }
  std::unique_ptr<Db> db(new Db(handle));
  sqlite3_busy_timeout(handle, 5000);
  for (const char* pragma :
       {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON"}) {
    absl::Status status = db->Exec(pragma);
    if (!status.ok()) return absl::UnavailableError(absl::StrCat(path, ": ", status.message()));
  }
  return db;
}

Db::~Db() { sqlite3_close_v2(db_); }

absl::Status Db::Failure(int rc, std::string_view what, std::string_view sql) {
  // The one place SQLite's errors become statuses: the whole story (message
  // and statement) for the operator's log, a message without SQL for callers.
  std::fprintf(stderr, "diablo-scheduler: sqlite %s failed: %s (%s) in: %s\n",
               std::string(what).c_str(), sqlite3_errmsg(db_), sqlite3_errstr(rc),
               std::string(sql.substr(0, 200)).c_str());
  switch (rc & 0xff) {
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
      writable_ = false;
      return absl::UnavailableError(
          absl::StrCat("the scheduler cannot write its database (", sqlite3_errstr(rc),
                       "): its disk is full or failing; nothing was changed, retry later"));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError("the scheduler's database is busy; retry");
    case SQLITE_CONSTRAINT:
      return absl::AlreadyExistsError("a record with the same key already exists");
    default:
      return absl::InternalError(
          absl::StrCat("the scheduler's database failed (", sqlite3_errstr(rc), ")"));
  }
}

absl::Status Db::Exec(std::string_view sql) {
  char* error = nullptr;
  const std::string text(sql);
  int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &error);
  sqlite3_free(error);  // Failure() reads the same message from the handle
  if (rc == SQLITE_OK) return absl::OkStatus();
  return Failure(rc, "exec", sql);
}

absl::StatusOr<Statement> Db::Prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) return Failure(rc, "prepare", sql);
  return Statement(this, stmt);
}

absl::Status Db::ProbeWrite() {
  // A real write: an empty transaction would commit without touching disk.
  absl::Status status = Exec(
      "BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS write_probe (at REAL); DELETE FROM "
      "write_probe; INSERT INTO write_probe VALUES (julianday('now')); COMMIT");
  if (!status.ok()) {
    if (!sqlite3_get_autocommit(db_)) (void)Exec("ROLLBACK");
    return status;
  }
  writable_ = true;
  return absl::OkStatus();
}

int64_t Db::Changes() const { return sqlite3_changes(db_); }

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::Bind(int64_t value) {
  if (sqlite3_bind_int64(stmt_, next_index_++, value) != SQLITE_OK) bind_status_ = Error("bind");
  return *this;
}
Statement& Statement::Bind(double value) {
  if (sqlite3_bind_double(stmt_, next_index_++, value) != SQLITE_OK) bind_status_ = Error("bind");
  return *this;
}
Statement& Statement::Bind(std::string_view value) {
  if (sqlite3_bind_text(stmt_, next_index_++, value.data(), static_cast<int>(value.size()),
                        SQLITE_TRANSIENT) != SQLITE_OK)
    bind_status_ = Error("bind");
  return *this;
}
Statement& Statement::BindNull() {
  if (sqlite3_bind_null(stmt_, next_index_++) != SQLITE_OK) bind_status_ = Error("bind");
  return *this;
}

absl::StatusOr<bool> Statement::Step() {
  if (!bind_status_.ok()) return bind_status_;
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return Error("step");
}

absl::Status Statement::Run() {
  absl::StatusOr<bool> row = Step();
  if (!row.ok()) return row.status();
  return absl::OkStatus();
}

int64_t Statement::Int(int column) const { return sqlite3_column_int64(stmt_, column); }
double Statement::Double(int column) const { return sqlite3_column_double(stmt_, column); }
std::string Statement::Text(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  return text
             ? std::string(reinterpret_cast<const char*>(text), sqlite3_column_bytes(stmt_, column))
             : "";
}
bool Statement::IsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

absl::Status Statement::Error(std::string_view what) const {
  return db_->Failure(sqlite3_extended_errcode(db_->handle()), what, sqlite3_sql(stmt_));
}

absl::StatusOr<std::vector<int64_t>> FirstColumnInts(Statement& query) {
  std::vector<int64_t> values;
  while (true) {
    absl::StatusOr<bool> row = query.Step();
    if (!row.ok()) return row.status();
    if (!*row) return values;
    values.push_back(query.Int(0));
  }
}

absl::StatusOr<std::vector<std::string>> FirstColumnTexts(Statement& query) {
  std::vector<std::string> values;
  while (true) {
    absl::StatusOr<bool> row = query.Step();
    if (!row.ok()) return row.status();
    if (!*row) return values;
    values.push_back(query.Text(0));
  }
}

absl::StatusOr<Transaction> Transaction::Begin(Db& db) {
  absl::Status status = db.Exec("BEGIN IMMEDIATE");
  if (!status.ok()) return status;
  return Transaction(&db, sqlite3_total_changes64(db.handle()));
}

Transaction::~Transaction() {
  // A failed COMMIT (a full disk) has already rolled back on its own.
  if (db_ != nullptr && !sqlite3_get_autocommit(db_->handle())) (void)db_->Exec("ROLLBACK");
}

absl::Status Transaction::Commit() {
  absl::Status status = db_->Exec("COMMIT");
  if (status.ok()) {
    if (sqlite3_total_changes64(db_->handle()) > changes_at_begin_) db_->writable_ = true;
    db_ = nullptr;
  }
  return status;
}

}  // namespace diablo::server
