// What a worker may publish: only objects under its own attempt's output
// prefix, only under names that stay inside a download folder.  A worker
// holding one job's fence cannot make the scheduler serve another job's
// objects, or anything else in storage, as its artifacts or checkpoints.
#include <string>
#include <vector>

#include "tests/server/scheduler_test_util.h"

namespace diablo::server {
namespace {

class WorkerBoundaryTest : public testing::SchedulerFixture {
 protected:
  v1::CompleteAttemptRequest Success(const v1::Lease& lease, const std::string& name,
                                     const std::string& key) {
    v1::CompleteAttemptRequest request;
    request.set_fence(lease.fence());
    request.set_succeeded(true);
    auto* artifact = request.add_artifacts();
    artifact->set_name(name);
    artifact->set_key(key);
    artifact->set_size_bytes(10);
    artifact->set_sha256(std::string(64, 'a'));
    return request;
  }

  // Two jobs of two tenants running on two workers: {alpha's lease, beta's}.
  std::pair<v1::Lease, v1::Lease> TwoTenantsRunning() {
    const std::string w1 = Register("w1"), w2 = Register("w2");
    const v1::Job alpha = Create("alpha");
    Create("beta");
    auto first = Lease(w1), second = Lease(w2);
    EXPECT_TRUE(first && second);
    if (!first || !second) return {};
    if (first->job_id() == alpha.id()) return {*first, *second};
    return {*second, *first};
  }
};

TEST_F(WorkerBoundaryTest, ArtifactsOutsideTheAttemptsPrefixAreRefused) {
  auto [victim_lease, my_lease] = TwoTenantsRunning();
  ASSERT_FALSE(my_lease.job_id().empty());
  for (const std::string& key : std::vector<std::string>{
           victim_lease.output_prefix() + "/output/adapter/adapter_model.safetensors",
           "jobs/" + my_lease.job_id() + "/attempts/99/output/x", "uploads/alpha/secret.jsonl",
           my_lease.output_prefix() + "-evil/output/x", "checkpoints/latest"}) {
    SCOPED_TRACE(key);
    absl::Status status = scheduler_->CompleteAttempt(Success(my_lease, "adapter/x", key));
    EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  }
  auto artifacts = scheduler_->ListArtifacts("beta", my_lease.job_id());
  ASSERT_TRUE(artifacts.ok());
  EXPECT_TRUE(artifacts->empty()) << "nothing refused may be listed";
  EXPECT_TRUE(scheduler_
                  ->CompleteAttempt(Success(my_lease, "adapter/x",
                                            my_lease.output_prefix() + "/output/adapter/x"))
                  .ok());
}

TEST_F(WorkerBoundaryTest, ArtifactNamesThatLeaveTheDownloadFolderAreRefused) {
  const std::string w = Register("w1");
  Create();
  auto lease = Lease(w);
  ASSERT_TRUE(lease);
  for (const char* name : {"../../.bashrc", "/etc/cron.d/x", "adapter/../../x", "a\nb"}) {
    SCOPED_TRACE(name);
    absl::Status status = scheduler_->CompleteAttempt(
        Success(*lease, name, lease->output_prefix() + "/output/adapter/x"));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  }
}

TEST_F(WorkerBoundaryTest, ACheckpointOutsideThePrefixNeverBecomesLatest) {
  auto [victim_lease, my_lease] = TwoTenantsRunning();
  ASSERT_FALSE(my_lease.job_id().empty());
  const std::string stolen = victim_lease.output_prefix() + "/checkpoints/step-00000004";
  auto reported = Report(my_lease.fence(), R"({"event":"checkpoint","step":4,"key":")" + stolen +
                                               R"(","final":false})");
  EXPECT_EQ(reported.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(
      scheduler_->storage().GetBytes("jobs/" + my_lease.job_id() + "/checkpoints/latest").ok())
      << "a refused checkpoint must not be named as the job's latest";
}

}  // namespace
}  // namespace diablo::server
