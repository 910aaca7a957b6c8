// The authenticator under a flood: unknown tokens from one client address
// stop reaching the token store once the address has spent its failure
// budget, while valid tokens (from elsewhere, or verified a moment ago) go
// on working; every table it keeps is bounded; a revoke from another
// process bites within the cache time.
#include "server/auth_limits.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "server/auth.h"

namespace diablo::server {
namespace {

using ::testing::HasSubstr;

// ---- who a peer is

TEST(PeerAddress, TheSourcePortIsNotPartOfWhoAClientIs) {
  EXPECT_EQ(PeerAddress("ipv4:10.1.2.3:50123"), "ipv4:10.1.2.3");
  EXPECT_EQ(PeerAddress("ipv4:10.1.2.3:50124"), PeerAddress("ipv4:10.1.2.3:50123"));
  EXPECT_NE(PeerAddress("ipv4:10.1.2.4:50123"), PeerAddress("ipv4:10.1.2.3:50123"));
}

TEST(PeerAddress, AnIpv6ClientIsItsSlash64WhicheverWayGrpcSpellsIt) {
  const std::string one = PeerAddress("ipv6:[2001:db8:1:2::1]:5000");
  EXPECT_EQ(one, "ipv6:2001:0db8:0001:0002::/64");
  EXPECT_EQ(PeerAddress("ipv6:%5B2001:db8:1:2:ffff:ffff:ffff:ffff%5D:6000"), one)
      << "rotating the interface id within the /64 gains nothing";
  EXPECT_NE(PeerAddress("ipv6:[2001:db8:1:3::1]:5000"), one);
  EXPECT_EQ(PeerAddress("ipv6:[fe80::1%25eth0]:5000"), "ipv6:fe80:0000:0000:0000::/64");
}

TEST(PeerAddress, MappedIpv4AddressesAreNotOneBigIpv6Network) {
  // All of ::ffff:0:0/96 lies in one /64: grouping it so would make every
  // IPv4 client of a dual-stack listener share one failure budget.
  EXPECT_EQ(PeerAddress("ipv6:[::ffff:10.1.2.3]:5000"), "ipv4:10.1.2.3");
  EXPECT_NE(PeerAddress("ipv6:[::ffff:10.1.2.3]:5000"), PeerAddress("ipv6:[::ffff:10.1.2.4]:5000"));
}

TEST(PeerAddress, OtherPeersAreKeptWhole) {
  EXPECT_EQ(PeerAddress("unix:/run/diablo.sock"), "unix:/run/diablo.sock");
  EXPECT_EQ(PeerAddress(""), "");
  EXPECT_EQ(PeerAddress("ipv6:[not-an-address]:1"), "ipv6:[not-an-address]");
}

// ---- bounded token buckets

TEST(RateLimiter, ABucketAllowsItsBurstThenRefillsAtItsRate) {
  RateLimiter limiter(/*per_second=*/2, /*burst=*/3, /*max_keys=*/10);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Take("k", 100.0)) << i;
  EXPECT_FALSE(limiter.Take("k", 100.0));
  EXPECT_FALSE(limiter.Allows("k", 100.0));
  EXPECT_NEAR(limiter.SecondsUntilAllowed("k", 100.0), 0.5, 1e-9);
  EXPECT_TRUE(limiter.Allows("k", 100.5));
  EXPECT_TRUE(limiter.Take("k", 100.5));
  EXPECT_FALSE(limiter.Take("k", 100.5));
  EXPECT_TRUE(limiter.Take("other", 100.5)) << "each key has its own bucket";
}

TEST(RateLimiter, AClockGoingBackwardsRefillsNothing) {
  RateLimiter limiter(1, 1, 10);
  EXPECT_TRUE(limiter.Take("k", 100.0));
  EXPECT_FALSE(limiter.Take("k", 50.0));
  EXPECT_FALSE(limiter.Take("k", 50.5));
}

TEST(RateLimiter, NeverTracksMoreThanItsMaximumOfKeys) {
  RateLimiter limiter(0.001, 1, /*max_keys=*/100);
  for (int i = 0; i < 10000; ++i) limiter.Take("peer-" + std::to_string(i), 1.0);
  EXPECT_EQ(limiter.size(), 100u);
  // Asking about a key costs no memory: a flood of questions cannot grow it.
  RateLimiter fresh(1, 1, 100);
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(fresh.Allows("new-" + std::to_string(i), 1.0));
  EXPECT_EQ(fresh.size(), 0u);
  // The most recent key is remembered: an active flooder is not the one evicted.
  EXPECT_FALSE(limiter.Take("peer-9999", 1.0));
}

// ---- the authenticator

class AuthFloodTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("diablo-auth-flood-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".db");
    Remove();
    auto db = Db::Open(path_.string());
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    std::string id;
    auto secret = CreateToken(*db_, "ml-team", Role::kUser, "ci", &id);
    ASSERT_TRUE(secret.ok()) << secret.status();
    secret_ = *secret;
    token_id_ = id;
  }
  void TearDown() override {
    db_.reset();
    Remove();
  }
  void Remove() {
    for (const char* suffix : {"", "-wal", "-shm"})
      std::filesystem::remove(path_.string() + suffix);
  }
  std::unique_ptr<Authenticator> Open(AuthOptions options) {
    auto auth = Authenticator::Open(path_.string(), options);
    EXPECT_TRUE(auth.ok()) << auth.status();
    return auth.ok() ? std::move(*auth) : nullptr;
  }
  static AuthOptions Flood(double cache_s = 5) {
    AuthOptions options;
    options.failures_per_second = 0.001;  // no refill within a test
    options.failure_burst = 5;
    options.token_cache_s = cache_s;
    return options;
  }

  std::filesystem::path path_;
  std::unique_ptr<Db> db_;
  std::string secret_, token_id_;
};

TEST_F(AuthFloodTest, AFloodOfRandomTokensFromOneAddressStopsReachingTheStore) {
  auto auth = Open(Flood());
  int unauthenticated = 0, refused = 0;
  for (int i = 0; i < 1000; ++i) {
    // A new connection (source port) and a new random token each time.
    auto result = auth->Verify("dbl_random_" + std::to_string(i),
                               "ipv4:203.0.113.9:" + std::to_string(40000 + i));
    ASSERT_FALSE(result.ok());
    if (result.status().code() == absl::StatusCode::kUnauthenticated) ++unauthenticated;
    if (result.status().code() == absl::StatusCode::kResourceExhausted) {
      ++refused;
      EXPECT_THAT(std::string(result.status().message()), HasSubstr("unknown or revoked tokens"));
    }
  }
  EXPECT_EQ(unauthenticated, 5) << "the burst";
  EXPECT_EQ(refused, 995);
  EXPECT_EQ(auth->store_lookups(), 5) << "a refused call must not read the token store";

  // A valid token from another address is unaffected, and is looked up.
  auto other = auth->Verify(secret_, "ipv4:198.51.100.7:1234");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->tenant, "ml-team");
  EXPECT_EQ(auth->store_lookups(), 6);
}

TEST_F(AuthFloodTest, ATokenVerifiedAMomentAgoWorksEvenFromAFloodingAddress) {
  auto auth = Open(Flood());
  const std::string shared_nat = "ipv4:192.0.2.1:1000";
  ASSERT_TRUE(auth->Verify(secret_, shared_nat).ok());
  for (int i = 0; i < 50; ++i) (void)auth->Verify("dbl_guess_" + std::to_string(i), shared_nat);
  const int64_t lookups = auth->store_lookups();
  auto again = auth->Verify(secret_, shared_nat);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(auth->store_lookups(), lookups) << "answered from the verified-token cache";
  // Without the cache, the flooding address is refused before any lookup.
  auto uncached = Open(Flood(/*cache_s=*/0));
  for (int i = 0; i < 5; ++i) (void)uncached->Verify("dbl_guess_" + std::to_string(i), shared_nat);
  EXPECT_EQ(uncached->Verify(secret_, shared_nat).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(uncached->store_lookups(), 5);
}

TEST_F(AuthFloodTest, ValidCallsDoNotSpendTheAddressesFailureBudget) {
  auto auth = Open(Flood(/*cache_s=*/0));
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(auth->Verify(secret_, "ipv4:192.0.2.1:1").ok()) << i;
  EXPECT_EQ(auth->Verify("dbl_typo", "ipv4:192.0.2.1:1").status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthFloodTest, ARevokeFromAnotherProcessBitesWithinTheCacheTime) {
  auto auth = Open(Flood(/*cache_s=*/0.3));
  ASSERT_TRUE(auth->Verify(secret_, "ipv4:192.0.2.1:1").ok());
  // `diablo-scheduler token revoke` is another process with its own
  // connection to the same file.
  {
    auto other = Db::Open(path_.string());
    ASSERT_TRUE(other.ok());
    ASSERT_TRUE(RevokeToken(**other, token_id_).ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  auto after = auth->Verify(secret_, "ipv4:192.0.2.1:1");
  EXPECT_EQ(after.status().code(), absl::StatusCode::kUnauthenticated) << after.status();
}

TEST_F(AuthFloodTest, WithoutACacheARevokeBitesAtOnce) {
  auto auth = Open(Flood(/*cache_s=*/0));
  ASSERT_TRUE(auth->Verify(secret_, "ipv4:192.0.2.1:1").ok());
  ASSERT_TRUE(RevokeToken(*db_, token_id_).ok());
  EXPECT_EQ(auth->Verify(secret_, "ipv4:192.0.2.1:1").status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(AuthFloodTest, TheCachedTokenIsStillRateLimited) {
  AuthOptions options = Flood();
  options.requests_per_second = 0.001;
  options.burst = 3;
  auto auth = Open(options);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(auth->Verify(secret_, "ipv4:192.0.2.1:1").ok());
  auto limited = auth->Verify(secret_, "ipv4:192.0.2.1:1");
  EXPECT_EQ(limited.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(limited.status().message()), HasSubstr("rate limit"));
}

}  // namespace
}  // namespace diablo::server
