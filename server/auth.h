// Bearer-token authentication and per-token rate limits.  Tokens are random
// secrets shown once at creation (diablo-scheduler token create); the store
// keeps only their SHA-256.  Each token belongs to a tenant and has a role:
// `user` (the job and file APIs), `worker` (the worker API) or `admin` (both).
//
// Unknown tokens cost a database lookup each, so a client address that
// keeps sending them is refused before the lookup once it has used up its
// budget of failures; a token verified a moment ago is answered from memory
// (for at most AuthOptions::token_cache_s, the time a revoke takes to bite).
// Every table kept in memory is bounded (server/auth_limits.h).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/lru_cache.h"
#include "grpcpp/server_context.h"
#include "server/auth_limits.h"
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
  // Failed authentications (unknown or revoked tokens) per client address
  // (PeerAddress), per second and in a burst; past them that address's
  // calls are RESOURCE_EXHAUSTED without a database lookup, except with a
  // token verified within token_cache_s.
  double failures_per_second = 1;
  double failure_burst = 20;
  // Seconds a verified token is trusted without asking the database again;
  // a `token revoke` (another process, on the same file) bites within this.
  // 0: every call asks.
  double token_cache_s = 5;
};

// The most entries each in-memory table of the Authenticator holds.
inline constexpr size_t kMaxTrackedTokens = 10000;     // rate buckets, verified tokens
inline constexpr size_t kMaxTrackedAddresses = 10000;  // failure budgets

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

  // The check behind Authenticate for a bearer `secret` sent from `peer`
  // (grpc::ServerContext::peer()), before the role: the verified-token
  // cache, the address's failure budget, the store, the token's rate.
  absl::StatusOr<Principal> Verify(std::string_view secret, std::string_view peer);

  // Token lookups in the store so far (what a flood of unknown tokens
  // would cost; tests check that a refused one costs none).
  int64_t store_lookups() const { return store_lookups_.load(); }

 private:
  Authenticator(std::unique_ptr<Db> db, AuthOptions options);

  // The token whose secret hashes to `hash`, from the store; nullopt when
  // unknown or revoked.  REQUIRES: mu_ held.
  absl::StatusOr<std::optional<Principal>> Lookup(const std::string& hash);

  struct Verified {
    Principal principal;
    double at = 0;  // steady seconds
  };

  std::unique_ptr<Db> db_;
  AuthOptions options_;
  std::mutex mu_;
  RateLimiter requests_;                      // by token id; guarded by mu_
  RateLimiter failures_;                      // by PeerAddress; guarded by mu_
  LruCache<std::string, Verified> verified_;  // by token hash; guarded by mu_
  std::atomic<int64_t> store_lookups_{0};
};

// Token administration on the database file (the `token` subcommands).
// CreateToken returns the secret, which is not stored and cannot be shown again.
absl::StatusOr<std::string> CreateToken(Db& db, const std::string& tenant, Role role,
                                        const std::string& name, std::string* id);
absl::StatusOr<std::vector<TokenInfo>> ListTokens(Db& db);
absl::Status RevokeToken(Db& db, const std::string& id);

}  // namespace diablo::server
