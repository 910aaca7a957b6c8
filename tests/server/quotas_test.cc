// Per-tenant limits in the scheduler's core: the quotas file's strict
// parsing, the upload quotas (checked at the header and again when the file
// row is added), concurrent upload slots, and the running-jobs limit in
// placement.  Each test has a tenant over a limit and another tenant that
// must not notice.
#include "server/quotas.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "tests/server/scheduler_test_util.h"

namespace diablo::server {
namespace {

using ::testing::HasSubstr;

// ---- the quotas file

absl::StatusOr<QuotaOverrides> Parse(const std::string& json) {
  return QuotaOverrides::Parse(json, "quotas.json");
}

TEST(QuotaOverrides, ATenantsEntryOverridesOnlyTheKeysItNames) {
  auto quotas = Parse(R"({"tenants": {"ml-team": {"upload_bytes": 5000, "running_jobs": 3},
                                      "free": {"files": 0}}})");
  ASSERT_TRUE(quotas.ok()) << quotas.status();
  TenantLimits defaults;
  defaults.files = 7;
  const TenantLimits ml = quotas->Apply("ml-team", defaults);
  EXPECT_EQ(ml.upload_bytes, 5000);
  EXPECT_EQ(ml.running_jobs, 3);
  EXPECT_EQ(ml.files, 7) << "a key left out keeps the default";
  EXPECT_EQ(quotas->Apply("free", defaults).files, 0) << "0 is a limit of its own: none";
  EXPECT_EQ(quotas->Apply("someone-else", defaults).upload_bytes, defaults.upload_bytes);
  EXPECT_EQ(quotas->Apply("ml-tea", defaults).upload_bytes, defaults.upload_bytes)
      << "tenant names match exactly";
}

TEST(QuotaOverrides, AnEmptyDocumentOverridesNothing) {
  auto quotas = Parse("{}");
  ASSERT_TRUE(quotas.ok()) << quotas.status();
  EXPECT_TRUE(quotas->empty());
}

TEST(QuotaOverrides, MalformedFilesAreRefusedNamingTheFileAndTheKey) {
  struct Case {
    const char* json;
    const char* says;
  };
  const Case cases[] = {
      {"", "not a JSON object"},
      {"[1]", "not a JSON object"},
      {R"({"tenants": {"a": {"files": 1}})", "not a JSON object"},  // truncated
      {R"({"tenant": {}})", "unknown key \"tenant\""},
      {R"({"tenants": []})", "\"tenants\" must be an object"},
      {R"({"tenants": {"a": 5}})", "tenants.a must be an object"},
      {R"({"tenants": {"a": {"file": 1}}})", "tenants.a: unknown key \"file\""},
      {R"({"tenants": {"a": {"files": -1}}})", "tenants.a.files: must be a whole number"},
      {R"({"tenants": {"a": {"files": 2.5}}})", "tenants.a.files: must be a whole number"},
      {R"({"tenants": {"a": {"files": 1e3}}})", "tenants.a.files: must be a whole number"},
      {R"({"tenants": {"a": {"files": "10"}}})", "tenants.a.files: must be a whole number"},
      {R"({"tenants": {"a": {"files": null}}})", "tenants.a.files: must be a whole number"},
      {R"({"tenants": {"a": {"running_jobs": 10000000}}})", "tenants.a.running_jobs"},
      {R"({"tenants": {"a": {"upload_bytes": 18446744073709551615}}})", "tenants.a.upload_bytes"},
      {R"({"tenants": {"": {"files": 1}}})", "is not a tenant name"},
      {R"({"tenants": {"a": {"files": 1}, "a": {"files": 2}}})", "\"tenants.a\" appears twice"},
      {R"({"tenants": {"a": {"files": 1, "files": 100}}})", "\"tenants.a.files\" appears twice"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.json);
    auto quotas = Parse(c.json);
    ASSERT_FALSE(quotas.ok());
    EXPECT_EQ(quotas.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(quotas.status().message()), HasSubstr("quotas.json: "));
    EXPECT_THAT(std::string(quotas.status().message()), HasSubstr(c.says));
  }
  const std::string long_name(65, 'x');
  EXPECT_FALSE(Parse(R"({"tenants": {")" + long_name + R"(": {}}})").ok());
}

TEST(QuotaOverrides, AMissingFileIsNamed) {
  auto quotas = QuotaOverrides::Load("/nonexistent/quotas.json");
  ASSERT_FALSE(quotas.ok());
  EXPECT_THAT(std::string(quotas.status().message()), HasSubstr("/nonexistent/quotas.json"));
}

TEST(UploadTracker, ASlotIsGivenBackWhenItGoesAndMovesDoNotGiveItTwice) {
  UploadTracker tracker;
  {
    UploadTracker::Slot first = tracker.Acquire("a", 10);
    std::optional<UploadTracker::Slot> moved(std::move(first));
    UploadTracker::Slot second = tracker.Acquire("a", 5);
    EXPECT_EQ(tracker.Of("a").uploads, 2);
    EXPECT_EQ(tracker.Of("a").bytes, 15);
    EXPECT_EQ(tracker.Of("b").uploads, 0);
    moved.reset();
    EXPECT_EQ(tracker.Of("a").uploads, 1);
    EXPECT_EQ(tracker.Of("a").bytes, 5);
  }
  EXPECT_EQ(tracker.Of("a").uploads, 0);
  EXPECT_EQ(tracker.Of("a").bytes, 0);
}

// ---- the scheduler's checks

class QuotaTest : public testing::SchedulerFixture {
 protected:
  v1::UploadHeader Header(int64_t size) {
    v1::UploadHeader header;
    header.set_name("train.jsonl");
    header.set_size_bytes(size);
    header.set_sha256(std::string(64, 'a'));
    return header;
  }
  absl::StatusOr<v1::File> Add(const std::string& tenant, int64_t size) {
    return scheduler_->AddFile(tenant, Header(size), "files/" + NewId("f-"));
  }
};

TEST_F(QuotaTest, AnUploadOverTheByteQuotaIsRefusedAtTheHeaderSayingWhatToDo) {
  config_.tenant_limits.upload_bytes = 1000;
  Reopen();
  ASSERT_TRUE(Add("a", 600).ok());
  auto refused = scheduler_->BeginUpload("a", 401);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  const std::string message(refused.status().message());
  EXPECT_THAT(message, HasSubstr("upload quota"));
  EXPECT_THAT(message, HasSubstr("holds 600 bytes"));
  EXPECT_THAT(message, HasSubstr("may hold 1000 bytes"));
  EXPECT_THAT(message, HasSubstr("diablo-ctl files rm"));
  EXPECT_TRUE(scheduler_->BeginUpload("a", 400).ok()) << "exactly at the limit is allowed";
  EXPECT_TRUE(scheduler_->BeginUpload("b", 1000).ok()) << "another tenant has its own quota";
}

TEST_F(QuotaTest, UploadsInProgressCountAgainstTheQuotaUntilTheyEnd) {
  config_.tenant_limits.upload_bytes = 1000;
  Reopen();
  std::optional<UploadTracker::Slot> first;
  {
    auto slot = scheduler_->BeginUpload("a", 600);
    ASSERT_TRUE(slot.ok()) << slot.status();
    first.emplace(std::move(*slot));
  }
  auto second = scheduler_->BeginUpload("a", 600);
  ASSERT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted)
      << "two uploads that each fit must not both start when together they do not";
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("uploads in progress"));
  first.reset();  // the first upload failed or was cancelled
  EXPECT_TRUE(scheduler_->BeginUpload("a", 600).ok());
}

TEST_F(QuotaTest, AddingTheFileChecksAgainSoRacingUploadsCannotPassTheQuotaTogether) {
  config_.tenant_limits.upload_bytes = 1000;
  Reopen();
  // Two uploads that passed their headers before either was stored (say,
  // with a larger limit at the time): the second row would pass the quota.
  ASSERT_TRUE(Add("a", 600).ok());
  auto second = Add("a", 600);
  ASSERT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("upload quota"));
  auto listed = scheduler_->ListFiles("a", v1::ListFilesRequest());
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->files_size(), 1) << "the refused file left no row";
  EXPECT_TRUE(Add("b", 1000).ok());
}

TEST_F(QuotaTest, TheFileCountIsLimitedAndDeletingMakesRoom) {
  config_.tenant_limits.files = 2;
  Reopen();
  auto one = Add("a", 1);
  ASSERT_TRUE(one.ok());
  ASSERT_TRUE(Add("a", 1).ok());
  auto refused = scheduler_->BeginUpload("a", 1);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("file quota"));
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("holds 2 uploaded files"));
  EXPECT_EQ(Add("a", 1).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(Add("b", 1).ok()) << "another tenant is unaffected";
  ASSERT_TRUE(scheduler_->DeleteFile("a", one->id()).ok());
  EXPECT_TRUE(scheduler_->BeginUpload("a", 1).ok());
}

TEST_F(QuotaTest, ConcurrentUploadsAreLimitedPerTenant) {
  config_.tenant_limits.concurrent_uploads = 2;
  Reopen();
  std::vector<UploadTracker::Slot> held;
  for (int i = 0; i < 2; ++i) {
    auto slot = scheduler_->BeginUpload("a", 1);
    ASSERT_TRUE(slot.ok()) << slot.status();
    held.push_back(std::move(*slot));
  }
  auto third = scheduler_->BeginUpload("a", 1);
  ASSERT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(third.status().message()), HasSubstr("2 uploads in progress"));
  EXPECT_TRUE(scheduler_->BeginUpload("b", 1).ok()) << "another tenant is unaffected";
  held.pop_back();
  EXPECT_TRUE(scheduler_->BeginUpload("a", 1).ok());
}

TEST_F(QuotaTest, TheQuotasFileOverridesTheDefaultsForOneTenant) {
  config_.tenant_limits.upload_bytes = 1000;
  QuotaOverrides::Entry big;
  big.upload_bytes = 0;  // no limit
  big.queued_jobs = 1;
  config_.quotas.Set("big", big);
  Reopen();
  EXPECT_TRUE(scheduler_->BeginUpload("big", int64_t{1} << 50).ok());
  EXPECT_EQ(scheduler_->BeginUpload("a", 1001).status().code(),
            absl::StatusCode::kResourceExhausted);
  Create("big");
  v1::CreateJobRequest request;
  request.mutable_spec()->set_model("/m");
  ValidatedJob job;
  job.spec_json = job.config_json = "{}";
  auto second = scheduler_->CreateJob("big", request, job);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted)
      << "its queued_jobs override applies too";
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("the limit is 1"));
  EXPECT_TRUE(scheduler_->CreateJob("a", request, job).ok());
}

// ---- running jobs

TEST_F(QuotaTest, ATenantAtItsRunningLimitWaitsInTheQueueWhileOthersArePlaced) {
  QuotaOverrides::Entry two;
  two.running_jobs = 2;
  config_.quotas.Set("a", two);
  Reopen();
  std::vector<std::string> workers;
  for (const char* name : {"w1", "w2", "w3", "w4"}) workers.push_back(Register(name));
  const v1::Job a1 = Create("a"), a2 = Create("a"), a3 = Create("a");
  EXPECT_EQ(State(a1.id()), v1::JOB_STATE_ASSIGNED);
  EXPECT_EQ(State(a2.id()), v1::JOB_STATE_ASSIGNED);
  EXPECT_EQ(State(a3.id()), v1::JOB_STATE_QUEUED) << "a free worker is not a reason to pass it";
  const v1::Job b1 = Create("b");
  EXPECT_EQ(State(b1.id(), "b"), v1::JOB_STATE_ASSIGNED) << "b's job goes past a's queued one";
  for (const std::string& w : workers) Heartbeat(w);  // alive through the tick
  ASSERT_TRUE(scheduler_->Tick().ok());
  EXPECT_EQ(State(a3.id()), v1::JOB_STATE_QUEUED) << "placement passes keep it queued, not failed";

  // One of a's jobs ends: its queued job takes the slot.
  std::optional<int64_t> a1_fence;
  for (const std::string& w : workers)
    if (auto lease = Lease(w); lease && lease->job_id() == a1.id()) a1_fence = lease->fence();
  ASSERT_TRUE(a1_fence.has_value());
  ASSERT_TRUE(Complete(*a1_fence, /*succeeded=*/true).ok());
  EXPECT_EQ(State(a1.id()), v1::JOB_STATE_SUCCEEDED);
  for (const std::string& w : workers) Heartbeat(w);
  ASSERT_TRUE(scheduler_->Tick().ok());  // the server's next placement pass (every second)
  EXPECT_EQ(State(a3.id()), v1::JOB_STATE_ASSIGNED);
}

TEST_F(QuotaTest, RunningJobsDefaultToNoLimit) {
  for (const char* name : {"w1", "w2", "w3"}) Register(name);
  const v1::Job a1 = Create("a"), a2 = Create("a"), a3 = Create("a");
  for (const v1::Job& job : {a1, a2, a3}) EXPECT_EQ(State(job.id()), v1::JOB_STATE_ASSIGNED);
}

TEST_F(QuotaTest, TheRunningLimitFromTheFlagAppliesToEveryTenant) {
  config_.tenant_limits.running_jobs = 1;
  Reopen();
  std::vector<std::string> workers;
  for (const char* name : {"w1", "w2", "w3", "w4"}) workers.push_back(Register(name));
  const v1::Job a1 = Create("a"), a2 = Create("a");
  const v1::Job b1 = Create("b"), b2 = Create("b");
  EXPECT_EQ(State(a1.id()), v1::JOB_STATE_ASSIGNED);
  EXPECT_EQ(State(a2.id()), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(State(b1.id(), "b"), v1::JOB_STATE_ASSIGNED);
  EXPECT_EQ(State(b2.id(), "b"), v1::JOB_STATE_QUEUED);
  // A cancelled running job frees its tenant's slot too.
  ASSERT_TRUE(scheduler_->CancelJob("a", a1.id(), "").ok());
  for (const std::string& w : workers) Heartbeat(w);  // alive through the tick
  ASSERT_TRUE(scheduler_->Tick().ok());
  EXPECT_EQ(State(a2.id()), v1::JOB_STATE_ASSIGNED);
  EXPECT_EQ(State(b2.id(), "b"), v1::JOB_STATE_QUEUED);
}

}  // namespace
}  // namespace diablo::server
