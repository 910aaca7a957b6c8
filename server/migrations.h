// The store's schema, as an ordered list of migrations.  schema_version holds
// how many have been applied; opening a database applies the rest in one
// transaction each, so an older database upgrades in place and a newer one
// (from a later release) is refused instead of being misread.
#pragma once

#include "absl/status/status.h"
#include "server/db.h"

namespace diablo::server {

// Applies the migrations `db` lacks.  FAILED_PRECONDITION when the database
// was written by a newer scheduler.
absl::Status Migrate(Db& db);

// Number of migrations this build knows (the schema version it writes).
int LatestSchemaVersion();

}  // namespace diablo::server
