// A small RAII layer over SQLite for the scheduler's store: one connection,
// prepared statements with typed binds, and transactions.  Errors are
// absl::Status values fit for a caller to see: a full disk or an I/O error
// is UNAVAILABLE, and no message carries SQL (operators find the statement
// on stderr).
#pragma once

#include <sqlite3.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace diablo::server {

class Statement;

class Db {
 public:
  // Opens (creating) the database at `path` with the store's settings: WAL
  // journal, synchronous=FULL (a committed state change survives power
  // loss), foreign keys on, and a busy timeout for the CLI tools that open
  // the same file (diablo-scheduler token create).
  static absl::StatusOr<std::unique_ptr<Db>> Open(const std::string& path);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  absl::Status Exec(std::string_view sql);
  absl::StatusOr<Statement> Prepare(std::string_view sql);
  int64_t Changes() const;
  sqlite3* handle() { return db_; }

  // False from a write that failed for lack of space or an I/O error until
  // a write succeeds again (ProbeWrite, or any transaction).
  bool writable() const { return writable_.load(); }
  // Writes one page and commits: clears writable() once the disk has room.
  absl::Status ProbeWrite();

  // The status for SQLite result `rc` while doing `what` (statement `sql`):
  // logged in full to stderr, returned without the SQL.
  absl::Status Failure(int rc, std::string_view what, std::string_view sql);

 private:
  friend class Transaction;
  explicit Db(sqlite3* db) : db_(db) {}
  sqlite3* db_;
  std::atomic<bool> writable_{true};
};

class Statement {
 public:
  Statement(Statement&& other) noexcept : db_(other.db_), stmt_(other.stmt_) {
    other.stmt_ = nullptr;
  }
  Statement& operator=(Statement&&) = delete;
  ~Statement();

  // Binds parameters 1, 2, ... in order; each returns *this for chaining.
  Statement& Bind(int64_t value);
  Statement& Bind(int value) { return Bind(static_cast<int64_t>(value)); }
  Statement& Bind(double value);
  Statement& Bind(std::string_view value);
  Statement& Bind(const char* value) { return Bind(std::string_view(value)); }
  Statement& Bind(const std::string& value) { return Bind(std::string_view(value)); }
  Statement& BindNull();

  // Advances to the next row: true for a row, false when done.
  absl::StatusOr<bool> Step();
  // Runs a statement that returns no rows.
  absl::Status Run();

  int64_t Int(int column) const;
  double Double(int column) const;
  std::string Text(int column) const;
  bool IsNull(int column) const;

 private:
  friend class Db;
  Statement(Db* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  absl::Status Error(std::string_view what) const;

  Db* db_;
  sqlite3_stmt* stmt_;
  int next_index_ = 1;
  absl::Status bind_status_;
};

// Runs a query and collects its first column from every row.
absl::StatusOr<std::vector<int64_t>> FirstColumnInts(Statement& query);
absl::StatusOr<std::vector<std::string>> FirstColumnTexts(Statement& query);

// BEGIN IMMEDIATE ... COMMIT; rolls back when destroyed without Commit().
class Transaction {
 public:
  static absl::StatusOr<Transaction> Begin(Db& db);
  Transaction(Transaction&& other) noexcept
      : db_(other.db_), changes_at_begin_(other.changes_at_begin_) {
    other.db_ = nullptr;
  }
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction();
  absl::Status Commit();

 private:
  Transaction(Db* db, int64_t changes) : db_(db), changes_at_begin_(changes) {}
  Db* db_;
  int64_t changes_at_begin_;  // a commit that changed rows proves the disk writable
};

}  // namespace diablo::server
