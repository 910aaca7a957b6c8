// Bearer-token authentication and per-token rate limits.  Tokens are random
// secrets shown once at creation (diablo-scheduler token create); the store
// keeps only their SHA-256.  Each token belongs to a tenant and has a role:
// `user` (the job and file APIs), `worker` (the worker API) or `admin` (both).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/server_context.h"
#include "server/db.h"

namespace diablo::server {

enum class Role { kUser, kWorker, kAdmin };
const char* RoleName(Role role);
absl::StatusOr<Role> ParseRole(std::string_view name);

struct Principal {
  std::string tenant;
  Role role = Role::kUser;
  std::string token_id;
};

struct AuthOptions {
  // Off only for a single-user machine: every caller is tenant "default", admin.
  bool enabled = true;
  // Requests per second per token (token bucket), and the burst allowed.
  double requests_per_second = 50;
  double burst = 200;
};

struct TokenInfo {
  std::string id, tenant, name;
  Role role = Role::kUser;
  double created_at = 0;
  bool revoked = false;
};

class Authenticator {
 public:
  // Uses its own connection to the store's database file.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Open(const std::string& db_path,
                                                             AuthOptions options);

  // Checks the call's "authorization: Bearer <token>" metadata and that the
  // token's role may call an API for `needed`.  UNAUTHENTICATED (missing,
  // unknown or revoked token), PERMISSION_DENIED (wrong role),
  // RESOURCE_EXHAUSTED (over the rate limit).
  absl::StatusOr<Principal> Authenticate(const grpc::ServerContext& context, Role needed);

 private:
  Authenticator(std::unique_ptr<Db> db, AuthOptions options)
      : db_(std::move(db)), options_(options) {}

  struct Bucket {
    double tokens = 0;
    double updated = 0;
  };

  std::unique_ptr<Db> db_;
  AuthOptions options_;
  std::mutex mu_;
  std::map<std::string, Bucket> buckets_;
};

// Token administration on the database file (the `token` subcommands).
// CreateToken returns the secret, which is not stored and cannot be shown again.
absl::StatusOr<std::string> CreateToken(Db& db, const std::string& tenant, Role role,
                                        const std::string& name, std::string* id);
absl::StatusOr<std::vector<TokenInfo>> ListTokens(Db& db);
absl::Status RevokeToken(Db& db, const std::string& id);

}  // namespace diablo::server
