// What one tenant sees of the others: the fleet listing shows another
// tenant's running work as capacity in use, never its job ids.
#include <string>

#include "tests/server/scheduler_test_util.h"

namespace diablo::server {
namespace {

using TenantViewTest = testing::SchedulerFixture;

TEST_F(TenantViewTest, TheFleetListingNamesOnlyTheCallersJobs) {
  const std::string w1 = Register("w1"), w2 = Register("w2");
  const v1::Job alpha = Create("alpha");
  const v1::Job beta = Create("beta");
  ASSERT_TRUE(Lease(w1).has_value());
  ASSERT_TRUE(Lease(w2).has_value());

  auto as_beta = scheduler_->ListWorkers("beta", /*all_tenants=*/false);
  ASSERT_TRUE(as_beta.ok()) << as_beta.status();
  int mine = 0, others = 0;
  for (const v1::WorkerInfo& w : as_beta->workers()) {
    for (const std::string& id : w.running_jobs()) {
      EXPECT_EQ(id, beta.id()) << "beta sees one of alpha's job ids";
      ++mine;
    }
    others += w.other_jobs();
  }
  EXPECT_EQ(mine, 1);
  EXPECT_EQ(others, 1) << "alpha's job still shows as capacity in use";
  EXPECT_EQ(as_beta->DebugString().find(alpha.id()), std::string::npos);

  auto as_admin = scheduler_->ListWorkers("ops", /*all_tenants=*/true);
  ASSERT_TRUE(as_admin.ok());
  int named = 0;
  for (const v1::WorkerInfo& w : as_admin->workers()) {
    named += w.running_jobs_size();
    EXPECT_EQ(w.other_jobs(), 0);
  }
  EXPECT_EQ(named, 2);
}

}  // namespace
}  // namespace diablo::server
