// Token checks, rate limiting and token administration.
#include "server/auth.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "server/migrations.h"
#include "server/scheduler.h"

namespace diablo::server {

const char* RoleName(Role role) {
  switch (role) {
    case Role::kUser:
      return "user";
    case Role::kWorker:
      return "worker";
    case Role::kAdmin:
      return "admin";
  }
  return "?";
}

absl::StatusOr<Role> ParseRole(std::string_view name) {
  if (name == "user") return Role::kUser;
  if (name == "worker") return Role::kWorker;
  if (name == "admin") return Role::kAdmin;
  return absl::InvalidArgumentError(
      absl::StrCat("role \"", std::string(name), "\": expected user, worker or admin"));
}

namespace {

// Seconds on a steady clock: rate buckets and cache ages must not move with
// the wall clock.
double SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

Authenticator::Authenticator(std::unique_ptr<Db> db, AuthOptions options)
    : db_(std::move(db)),
      options_(options),
      requests_(options.requests_per_second, options.burst, kMaxTrackedTokens),
      failures_(options.failures_per_second, options.failure_burst, kMaxTrackedAddresses),
      verified_(kMaxTrackedTokens) {}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Open(const std::string& db_path,
                                                                   AuthOptions options) {
  ASSIGN_OR_RETURN(std::unique_ptr<Db> db, Db::Open(db_path));
  RETURN_IF_ERROR(Migrate(*db));
  return std::unique_ptr<Authenticator>(new Authenticator(std::move(db), options));
}

absl::StatusOr<Principal> Authenticator::Authenticate(const grpc::ServerContext& context,
                                                      Role needed) {
  if (!options_.enabled) return Principal{"default", Role::kAdmin, "none"};
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end())
    return absl::UnauthenticatedError(
        "missing credentials: send \"authorization: Bearer <token>\" (diablo-ctl --token or "
        "DIABLO_TOKEN; "
        "create one with diablo-scheduler token create)");
  const std::string value(it->second.data(), it->second.size());
  if (!absl::StartsWithIgnoreCase(value, "bearer "))
    return absl::UnauthenticatedError("authorization metadata must be \"Bearer <token>\"");
  ASSIGN_OR_RETURN(Principal principal, Verify(std::string_view(value).substr(7), context.peer()));
  if (principal.role != Role::kAdmin && principal.role != needed)
    return absl::PermissionDeniedError(absl::StrCat("a ", RoleName(principal.role),
                                                    " token cannot call the ",
                                                    needed == Role::kWorker  ? "worker"
                                                    : needed == Role::kAdmin ? "admin"
                                                                             : "job",
                                                    " API"));
  return principal;
}

absl::StatusOr<std::optional<Principal>> Authenticator::Lookup(const std::string& hash) {
  store_lookups_.fetch_add(1);
  ASSIGN_OR_RETURN(Statement select,
                   db_->Prepare("SELECT id, tenant, role, revoked FROM tokens WHERE hash = ?"));
  select.Bind(hash);
  ASSIGN_OR_RETURN(bool found, select.Step());
  if (!found || select.Int(3) != 0) return std::optional<Principal>();
  Principal principal;
  principal.token_id = select.Text(0);
  principal.tenant = select.Text(1);
  ASSIGN_OR_RETURN(principal.role, ParseRole(select.Text(2)));
  return std::optional<Principal>(std::move(principal));
}

absl::StatusOr<Principal> Authenticator::Verify(std::string_view secret, std::string_view peer) {
  // Only the hash is kept, in the cache as in the store.
  const std::string hash = Sha256Hex(secret);
  const double now = SteadySeconds();
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<Principal> principal;
  if (const Verified* cached = verified_.Get(hash);
      cached != nullptr && now - cached->at < options_.token_cache_s) {
    principal = cached->principal;
  } else {
    // The address pays for its failures before the store is asked again.
    const std::string address = PeerAddress(peer);
    if (!failures_.Allows(address, now))
      return absl::ResourceExhaustedError(
          absl::StrCat("too many calls with unknown or revoked tokens from this address; retry in ",
                       std::ceil(failures_.SecondsUntilAllowed(address, now)),
                       " s with a valid token (diablo-scheduler token create)"));
    ASSIGN_OR_RETURN(principal, Lookup(hash));
    if (!principal) {
      verified_.Erase(hash);  // an expired entry of a token revoked since
      failures_.Take(address, now);
      return absl::UnauthenticatedError("unknown or revoked token");
    }
    if (options_.token_cache_s > 0) verified_.Put(hash, Verified{*principal, now});
  }
  if (!requests_.Take(principal->token_id, now))
    return absl::ResourceExhaustedError(
        absl::StrCat("rate limit: at most ", options_.requests_per_second,
                     " requests per second per token; retry later"));
  return *principal;
}

absl::StatusOr<std::string> CreateToken(Db& db, const std::string& tenant, Role role,
                                        const std::string& name, std::string* id) {
  if (tenant.empty() || tenant.size() > 64)
    return absl::InvalidArgumentError("tenant: 1 to 64 characters");
  std::string secret = NewSecret("dbl_");
  *id = NewId("t-");
  RETURN_IF_ERROR(Migrate(db));
  ASSIGN_OR_RETURN(Statement insert, db.Prepare("INSERT INTO tokens (id, tenant, role, hash, name, "
                                                "created_at) VALUES (?, ?, ?, ?, ?, ?)"));
  RETURN_IF_ERROR(insert.Bind(*id)
                      .Bind(tenant)
                      .Bind(RoleName(role))
                      .Bind(Sha256Hex(secret))
                      .Bind(name)
                      .Bind(NowSeconds())
                      .Run());
  return secret;
}

absl::StatusOr<std::vector<TokenInfo>> ListTokens(Db& db) {
  RETURN_IF_ERROR(Migrate(db));
  ASSIGN_OR_RETURN(
      Statement select,
      db.Prepare(
          "SELECT id, tenant, name, role, created_at, revoked FROM tokens ORDER BY created_at"));
  std::vector<TokenInfo> tokens;
  while (true) {
    ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    TokenInfo info{select.Text(0), select.Text(1),   select.Text(2),
                   Role::kUser,    select.Double(4), select.Int(5) != 0};
    ASSIGN_OR_RETURN(info.role, ParseRole(select.Text(3)));
    tokens.push_back(std::move(info));
  }
  return tokens;
}

absl::Status RevokeToken(Db& db, const std::string& id) {
  RETURN_IF_ERROR(Migrate(db));
  ASSIGN_OR_RETURN(Statement update, db.Prepare("UPDATE tokens SET revoked = 1 WHERE id = ?"));
  RETURN_IF_ERROR(update.Bind(id).Run());
  if (db.Changes() == 0) return absl::NotFoundError(absl::StrCat("no token ", id));
  return absl::OkStatus();
}

}  // namespace diablo::server
