// Whose failure an attempt's end is: a lost or restarted worker, an expired
// lease or a draining worker is the fleet's and never spends the job's own
// max_retries; a trainer's crash does.
#include <string>

#include "tests/server/scheduler_test_util.h"

namespace diablo::server {
namespace {

using ::testing::HasSubstr;
using FailureBudgetTest = testing::SchedulerFixture;

TEST_F(FailureBudgetTest, LostWorkersDoNotSpendTheJobsRetries) {
  v1::Job job = Create("a", 0, 1, 1 << 30, /*max_retries=*/0);
  for (int restart = 0; restart < 3; ++restart) {
    const std::string w = Register("w1");  // the same node coming back: its attempt is lost
    ASSERT_TRUE(Lease(w).has_value()) << "restart " << restart;
  }
  Register("w1");  // loses attempt 3; the fresh worker takes attempt 4 at once
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_ASSIGNED)
      << "three attempts lost to the fleet, max_retries 0, and the job still runs";
  EXPECT_EQ(scheduler_->GetJob("a", job.id())->attempts(), 4);
  EXPECT_TRUE(AnyStateReasonContains(job.id(), "not the job's fault"));
}

TEST_F(FailureBudgetTest, ATrainerCrashSpendsARetryEvenAfterTheFleetLostAnAttempt) {
  v1::Job job = Create("a", 0, 1, 1 << 30, /*max_retries=*/1);
  std::string w = Register("w1");
  ASSERT_TRUE(Lease(w).has_value());
  w = Register("w1");  // attempt 1 lost with the worker
  auto second = Lease(w);
  ASSERT_TRUE(second.has_value());
  ASSERT_TRUE(Complete(second->fence(), /*succeeded=*/false).ok());
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_QUEUED) << "its one retry is still there";
  EXPECT_THAT(scheduler_->GetJob("a", job.id())->reason(), HasSubstr("retrying (attempt 2 of 2)"));
  auto third = Lease(w);
  ASSERT_TRUE(third.has_value());
  ASSERT_TRUE(Complete(third->fence(), /*succeeded=*/false).ok());
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_FAILED);
  EXPECT_THAT(scheduler_->GetJob("a", job.id())->reason(), HasSubstr("no retries left"));
}

TEST_F(FailureBudgetTest, ADrainingWorkersReportIsTheFleetsFailure) {
  v1::Job job = Create("a", 0, 1, 1 << 30, /*max_retries=*/0);
  const std::string w = Register("w1");
  auto lease = Lease(w);
  ASSERT_TRUE(lease.has_value());
  v1::CompleteAttemptRequest drained;
  drained.set_fence(lease->fence());
  drained.set_reason("diablo-worker is shutting down");
  drained.set_infrastructure(true);
  ASSERT_TRUE(scheduler_->CompleteAttempt(drained).ok());
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_QUEUED);
}

TEST_F(FailureBudgetTest, TheFleetsBudgetIsBoundedToo) {
  config_.max_infrastructure_retries = 1;
  Reopen();
  v1::Job job = Create("a", 0, 1, 1 << 30, /*max_retries=*/5);
  for (int restart = 0; restart < 2; ++restart) {
    const std::string w = Register("w1");
    ASSERT_TRUE(Lease(w).has_value());
  }
  Register("w1");
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_FAILED);
  EXPECT_THAT(scheduler_->GetJob("a", job.id())->reason(),
              HasSubstr("more than --max-infrastructure-retries 1"));
}

}  // namespace
}  // namespace diablo::server
