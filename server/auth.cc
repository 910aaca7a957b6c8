// Token checks, rate limiting and token administration.
#include "server/auth.h"

#include <algorithm>
#include <random>

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
  const std::string hash = Sha256Hex(std::string_view(value).substr(7));
  Principal principal;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ASSIGN_OR_RETURN(Statement select,
                     db_->Prepare("SELECT id, tenant, role, revoked FROM tokens WHERE hash = ?"));
    select.Bind(hash);
    ASSIGN_OR_RETURN(bool found, select.Step());
    if (!found || select.Int(3) != 0) return absl::UnauthenticatedError("unknown or revoked token");
    principal.token_id = select.Text(0);
    principal.tenant = select.Text(1);
    ASSIGN_OR_RETURN(principal.role, ParseRole(select.Text(2)));

    // Token bucket: refills at requests_per_second up to burst.
    const double now = NowSeconds();
    Bucket& bucket = buckets_[principal.token_id];
    if (bucket.updated == 0) bucket.tokens = options_.burst;
    bucket.tokens = std::min(options_.burst,
                             bucket.tokens + (now - bucket.updated) * options_.requests_per_second);
    bucket.updated = now;
    if (bucket.tokens < 1)
      return absl::ResourceExhaustedError(
          absl::StrCat("rate limit: at most ", options_.requests_per_second,
                       " requests per second per token; retry later"));
    bucket.tokens -= 1;
  }
  if (principal.role != Role::kAdmin && principal.role != needed)
    return absl::PermissionDeniedError(
        absl::StrCat("a ", RoleName(principal.role), " token cannot call the ",
                     needed == Role::kWorker ? "worker" : "job", " API"));
  return principal;
}

absl::StatusOr<std::string> CreateToken(Db& db, const std::string& tenant, Role role,
                                        const std::string& name, std::string* id) {
  if (tenant.empty() || tenant.size() > 64)
    return absl::InvalidArgumentError("tenant: 1 to 64 characters");
  std::random_device device;
  std::string secret = "dbl_";
  for (int i = 0; i < 4; ++i) {
    const uint64_t word = (static_cast<uint64_t>(device()) << 32) | device();
    absl::StrAppend(&secret, absl::Hex(word, absl::kZeroPad16));
  }
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
