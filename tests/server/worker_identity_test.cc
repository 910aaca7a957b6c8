// Worker identity at the scheduler: a registration's credential names one
// worker of one token; a call may act only as that worker, on the fences
// and ranks leased to it; a token cannot take over another token's live
// worker by registering its name; an admin's revoke ends a worker for good.
#include <string>

#include "tests/server/scheduler_test_util.h"

namespace diablo::server {
namespace {

using ::testing::HasSubstr;

class WorkerIdentityTest : public testing::SchedulerFixture {
 protected:
  // A CPU node's registration under `name`.
  static v1::RegisterWorkerRequest Node(const std::string& name, const std::string& host) {
    v1::RegisterWorkerRequest request;
    request.set_name(name);
    request.set_host(host);
    request.set_device_kind("cpu");
    request.set_memory_bytes(int64_t{16} << 30);
    return request;
  }
};

TEST_F(WorkerIdentityTest, ACredentialNamesItsWorkerForItsTokenOnly) {
  const std::string w1 = Register("w1", 16, 0, "t-one");
  const std::string w2 = Register("w2", 16, 0, "t-two");
  ASSERT_NE(credentials_[w1], credentials_[w2]);
  EXPECT_GE(credentials_[w1].size(), 64u) << "256 bits, not a guessable number";

  auto who = scheduler_->AuthenticateWorker("t-one", credentials_[w1]);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(*who, w1);

  auto stolen = scheduler_->AuthenticateWorker("t-two", credentials_[w1]);
  EXPECT_EQ(stolen.status().code(), absl::StatusCode::kPermissionDenied)
      << "another token's holder cannot use a credential it read somewhere";
  auto missing = scheduler_->AuthenticateWorker("t-one", "");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(missing.status().message(), HasSubstr("diablo-worker-credential"));
  auto guessed = scheduler_->AuthenticateWorker("t-one", "dwc_" + std::string(64, '0'));
  EXPECT_EQ(guessed.status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(WorkerIdentityTest, ACredentialSurvivesASchedulerRestart) {
  const std::string w1 = Register("w1", 16, 0, "t-one");
  Reopen();
  auto who = scheduler_->AuthenticateWorker("t-one", credentials_[w1]);
  ASSERT_TRUE(who.ok()) << who.status();
  EXPECT_EQ(*who, w1);
}

TEST_F(WorkerIdentityTest, OnlyTheWorkerHoldingAFenceAndRankMayUseIt) {
  const std::string w1 = Register("w1", 16, 0, "t-one");
  const std::string w2 = Register("w2", 16, 0, "t-two");
  Create();
  auto lease = Lease(w1);
  ASSERT_TRUE(lease.has_value());
  EXPECT_TRUE(scheduler_->CheckLeasedTo(w1, lease->fence(), 0).ok());
  for (auto [worker, fence, rank] : {std::tuple<std::string, int64_t, int>{w2, lease->fence(), 0},
                                     {w1, lease->fence(), 1},  // a rank it was not given
                                     {w1, lease->fence() + 1, 0},
                                     {w2, 999999, 0}}) {
    SCOPED_TRACE(worker + " fence " + std::to_string(fence) + " rank " + std::to_string(rank));
    absl::Status status = scheduler_->CheckLeasedTo(worker, fence, rank);
    EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  }
  // An unknown fence reads exactly like someone else's: nothing to learn.
  EXPECT_THAT(std::string(scheduler_->CheckLeasedTo(w2, 999999, 0).message()),
              HasSubstr("was not leased to worker " + w2));
}

TEST_F(WorkerIdentityTest, ATokenCannotReplaceAnotherTokensLiveWorker) {
  const std::string victim = Register("gpu-node-1", 16, 0, "t-one");
  Create();
  auto lease = Lease(victim);
  ASSERT_TRUE(lease.has_value());

  const v1::RegisterWorkerRequest request = Node("gpu-node-1", "10.9.9.9");
  auto hijack = scheduler_->RegisterWorker(request, "t-two");
  EXPECT_EQ(hijack.status().code(), absl::StatusCode::kPermissionDenied) << hijack.status();
  EXPECT_THAT(std::string(hijack.status().message()), HasSubstr("another token"));
  EXPECT_EQ(State(lease->job_id()), v1::JOB_STATE_ASSIGNED) << "the victim's attempt goes on";
  EXPECT_TRUE(scheduler_->AuthenticateWorker("t-one", credentials_[victim]).ok());

  // Its own token may (a restarted node), and so may anyone once the
  // worker's lease has lapsed.
  auto restart = scheduler_->RegisterWorker(request, "t-one");
  EXPECT_TRUE(restart.ok()) << restart.status();
  Sleep(config_.lease_timeout_s + 0.2);
  auto later = scheduler_->RegisterWorker(request, "t-two");
  EXPECT_TRUE(later.ok()) << later.status();
}

TEST_F(WorkerIdentityTest, RevokingAWorkerEndsItsCredentialAndRetriesItsAttemptFree) {
  const std::string w1 = Register("w1", 16, 0, "t-one");
  const v1::Job job = Create("a", 0, 1, int64_t{1} << 30, /*max_retries=*/0);
  auto lease = Lease(w1);
  ASSERT_TRUE(lease.has_value());

  auto info = scheduler_->RevokeWorker(w1, "disk errors");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->status(), "revoked");
  EXPECT_EQ(info->token_id(), "t-one");

  auto refused = scheduler_->AuthenticateWorker("t-one", credentials_[w1]);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("revoked"));
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_QUEUED)
      << "max_retries 0, yet the job is queued again: the fleet's failure, not the job's";
  EXPECT_TRUE(AnyStateReasonContains(job.id(), "revoked by an admin: disk errors"));

  // Its token may not bring the name back; a new token may.
  const v1::RegisterWorkerRequest request = Node("w1", "10.0.0.2");
  auto again = scheduler_->RegisterWorker(request, "t-one");
  EXPECT_EQ(again.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("new worker token"));
  auto fresh = scheduler_->RegisterWorker(request, "t-new");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  auto relaunched = Lease(fresh->worker_id());
  ASSERT_TRUE(relaunched.has_value());
  EXPECT_EQ(relaunched->job_id(), job.id());
  // The revoked worker's fence is stale now: whoever holds it, its result is refused.
  EXPECT_EQ(Complete(lease->fence(), true).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_ASSIGNED);

  auto listed = scheduler_->ListWorkers("a", /*all_tenants=*/true);
  ASSERT_TRUE(listed.ok());
  bool saw_revoked = false;
  for (const v1::WorkerInfo& w : listed->workers())
    if (w.id() == w1) saw_revoked = w.status() == "revoked" && w.token_id() == "t-one";
  EXPECT_TRUE(saw_revoked);
  auto tenant_view = scheduler_->ListWorkers("a", /*all_tenants=*/false);
  ASSERT_TRUE(tenant_view.ok());
  for (const v1::WorkerInfo& w : tenant_view->workers())
    EXPECT_TRUE(w.token_id().empty()) << "token ids are for admins";

  EXPECT_EQ(scheduler_->RevokeWorker("w-nope", "").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(scheduler_->RevokeWorker(w1, "again").ok()) << "revoking twice is harmless";
}

}  // namespace
}  // namespace diablo::server
