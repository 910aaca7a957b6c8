// Bearer tokens: what a call without, with a bad, revoked or wrong-role
// token gets, and the per-token rate limit.
#include "server/auth.h"

#include <gmock/gmock.h>
#include <grpcpp/test/server_context_test_spouse.h>
#include <gtest/gtest.h>

#include <filesystem>

namespace diablo::server {
namespace {

using ::testing::HasSubstr;

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("diablo-auth-" + std::to_string(::getpid()) + ".db");
    std::filesystem::remove(path_);
    auto db = Db::Open(path_.string());
    ASSERT_TRUE(db.ok());
    db_ = std::move(*db);
  }
  void TearDown() override {
    db_.reset();
    for (const char* suffix : {"", "-wal", "-shm"})
      std::filesystem::remove(path_.string() + suffix);
  }

  std::unique_ptr<Authenticator> Open(AuthOptions options = {}) {
    auto auth = Authenticator::Open(path_.string(), options);
    EXPECT_TRUE(auth.ok()) << auth.status();
    return auth.ok() ? std::move(*auth) : nullptr;
  }

  // Authenticates one call carrying `authorization` (none when empty).
  absl::StatusOr<Principal> Call(Authenticator& auth, const std::string& authorization, Role role) {
    grpc::ServerContext context;
    grpc::testing::ServerContextTestSpouse spouse(&context);
    if (!authorization.empty()) spouse.AddClientMetadata("authorization", authorization);
    return auth.Authenticate(context, role);
  }

  std::filesystem::path path_;
  std::unique_ptr<Db> db_;
};

TEST_F(AuthTest, ATokenNamesItsTenantAndRole) {
  std::string id;
  auto secret = CreateToken(*db_, "ml-team", Role::kUser, "ci", &id);
  ASSERT_TRUE(secret.ok());
  auto auth = Open();
  auto who = Call(*auth, "Bearer " + *secret, Role::kUser);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(who->tenant, "ml-team");
  EXPECT_EQ(who->token_id, id);
  auto tokens = ListTokens(*db_);
  ASSERT_TRUE(tokens.ok());
  ASSERT_EQ(tokens->size(), 1u);
  EXPECT_EQ((*tokens)[0].name, "ci");
}

TEST_F(AuthTest, MissingMalformedAndUnknownTokensAreUnauthenticated) {
  auto auth = Open();
  EXPECT_EQ(Call(*auth, "", Role::kUser).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Call(*auth, "Basic abc", Role::kUser).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Call(*auth, "Bearer dbl_nope", Role::kUser).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthTest, RevokedTokensStopWorking) {
  std::string id;
  auto secret = CreateToken(*db_, "t", Role::kUser, "", &id);
  // At once without the verified-token cache; within its time with it
  // (auth_limits_test.cc: ARevokeFromAnotherProcessBitesWithinTheCacheTime).
  AuthOptions uncached;
  uncached.token_cache_s = 0;
  auto auth = Open(uncached);
  ASSERT_TRUE(Call(*auth, "Bearer " + *secret, Role::kUser).ok());
  ASSERT_TRUE(RevokeToken(*db_, id).ok());
  auto after = Call(*auth, "Bearer " + *secret, Role::kUser);
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(RevokeToken(*db_, "t-missing").code(), absl::StatusCode::kNotFound);
}

TEST_F(AuthTest, RolesGuardTheirApis) {
  std::string id;
  auto worker = CreateToken(*db_, "ops", Role::kWorker, "", &id);
  auto admin = CreateToken(*db_, "ops", Role::kAdmin, "", &id);
  auto auth = Open();
  auto denied = Call(*auth, "Bearer " + *worker, Role::kUser);
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(denied.status().message()), HasSubstr("cannot call the job API"));
  EXPECT_TRUE(Call(*auth, "Bearer " + *worker, Role::kWorker).ok());
  EXPECT_TRUE(Call(*auth, "Bearer " + *admin, Role::kUser).ok());
  EXPECT_TRUE(Call(*auth, "Bearer " + *admin, Role::kWorker).ok());
}

TEST_F(AuthTest, TheStoreKeepsOnlyAHashOfTheSecret) {
  std::string id;
  auto secret = CreateToken(*db_, "t", Role::kUser, "", &id);
  auto rows = db_->Prepare("SELECT hash FROM tokens");
  ASSERT_TRUE(rows.ok());
  ASSERT_TRUE(*rows->Step());
  EXPECT_EQ(rows->Text(0).size(), 64u);
  EXPECT_EQ(rows->Text(0).find(secret->substr(4)), std::string::npos);
}

TEST_F(AuthTest, EachTokenIsRateLimited) {
  std::string id;
  auto a = CreateToken(*db_, "t", Role::kUser, "", &id);
  auto b = CreateToken(*db_, "t", Role::kUser, "", &id);
  auto auth = Open(AuthOptions{true, /*requests_per_second=*/0.5, /*burst=*/3});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Call(*auth, "Bearer " + *a, Role::kUser).ok()) << i;
  auto limited = Call(*auth, "Bearer " + *a, Role::kUser);
  EXPECT_EQ(limited.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(Call(*auth, "Bearer " + *b, Role::kUser).ok()) << "another token has its own bucket";
}

TEST_F(AuthTest, DisabledAuthMakesEveryCallerTheDefaultTenant) {
  auto auth = Open(AuthOptions{false, 1, 1});
  auto who = Call(*auth, "", Role::kWorker);
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(who->tenant, "default");
}

}  // namespace
}  // namespace diablo::server
