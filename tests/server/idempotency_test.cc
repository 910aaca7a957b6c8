// Idempotency: a retried CreateJob gets the first job back, and the same
// key with a different request is refused instead of silently answered with
// a job the caller did not ask for; a retried ReportEvents batch is
// recorded once.
#include <string>
#include <vector>

#include "tests/server/scheduler_test_util.h"

namespace diablo::server {
namespace {

using IdempotencyTest = testing::SchedulerFixture;

// The request the fixture's Create(tenant, priority, 1, ..., 2, key) sends.
v1::CreateJobRequest Request(const std::string& key, int priority) {
  v1::CreateJobRequest request;
  request.set_name("job");
  request.set_priority(priority);
  request.set_nodes(1);
  request.set_max_retries(2);
  request.set_idempotency_key(key);
  request.mutable_spec()->set_model("/models/m.gguf");
  return request;
}

TEST_F(IdempotencyTest, ARetryGetsTheFirstJobAndADifferentRequestIsRefused) {
  const v1::Job first = Create("a", /*priority=*/0, 1, 1 << 30, 2, "key-1");
  const v1::Job retried = Create("a", /*priority=*/0, 1, 1 << 30, 2, "key-1");
  EXPECT_EQ(retried.id(), first.id());

  auto found = scheduler_->FindByIdempotencyKey("a", Request("key-1", 0));
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->id(), first.id());

  auto changed = scheduler_->FindByIdempotencyKey("a", Request("key-1", 5));
  EXPECT_EQ(changed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(changed.status().message()).find(first.id()), std::string::npos);

  ValidatedJob job;
  job.spec_json = R"({"model":"/models/m.gguf"})";
  job.config_json = R"({"model":"/models/m.gguf","data":{"train":"/data/t.jsonl"}})";
  auto created = scheduler_->CreateJob("a", Request("key-1", 5), job);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument)
      << "the check holds inside CreateJob too, where two submits can race";

  EXPECT_EQ(scheduler_->FindByIdempotencyKey("b", Request("key-1", 5)).status().code(),
            absl::StatusCode::kNotFound)
      << "keys are per tenant";
}

// A worker whose ReportEvents reply was lost sends the batch again (with
// more reports after it): each report is recorded once.
TEST_F(IdempotencyTest, ARetriedReportBatchIsRecordedOnce) {
  const std::string w = Register("w1");
  const v1::Job job = Create();
  auto lease = Lease(w);
  ASSERT_TRUE(lease.has_value());
  auto batch = [&](int64_t first_seq, int count) {
    v1::ReportEventsRequest request;
    request.set_fence(lease->fence());
    request.set_first_seq(first_seq);
    for (int i = 0; i < count; ++i)
      request.add_reports()->set_log_line("line " + std::to_string(first_seq + i));
    return scheduler_->ReportEvents(request);
  };
  ASSERT_TRUE(batch(1, 3).ok());
  ASSERT_TRUE(batch(1, 3).ok());  // the same batch again
  ASSERT_TRUE(batch(2, 4).ok());  // re-formed after the loss: 2-3 again, 4-5 new
  std::vector<std::string> lines;
  for (const v1::JobEvent& e : Events(job.id()))
    if (e.has_log() && e.log().line().rfind("line ", 0) == 0) lines.push_back(e.log().line());
  EXPECT_EQ(lines, (std::vector<std::string>{"line 1", "line 2", "line 3", "line 4", "line 5"}));
}

TEST(RequestFingerprint, IgnoresTheKeyAndLabelOrderButNothingElse) {
  v1::CreateJobRequest a = Request("k1", 0), b = Request("k2", 0);
  (*a.mutable_labels())["team"] = "nlp";
  (*a.mutable_labels())["run"] = "7";
  b.mutable_labels()->insert(a.labels().begin(), a.labels().end());
  EXPECT_EQ(RequestFingerprint(a), RequestFingerprint(b));
  v1::CreateJobRequest reordered = Request("k1", 0);
  (*reordered.mutable_labels())["run"] = "7";
  (*reordered.mutable_labels())["team"] = "nlp";
  EXPECT_EQ(RequestFingerprint(reordered), RequestFingerprint(a));
  b.mutable_spec()->set_model("/models/other.gguf");
  EXPECT_NE(RequestFingerprint(a), RequestFingerprint(b));
}

}  // namespace
}  // namespace diablo::server
