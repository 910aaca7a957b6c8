// The scheduler's job state machine, placement, leases, fencing, retries,
// stall detection, cancellation, tenants, paging and durability, driven
// through its public interface over a real SQLite file.
#include <cmath>
#include <thread>

#include "absl/strings/match.h"
#include "server/migrations.h"
#include "tests/server/scheduler_test_util.h"

namespace diablo::server::testing {
namespace {

using ::testing::HasSubstr;

TEST_F(SchedulerFixture, JobIsQueuedThenLeasedToARegisteredWorker) {
  v1::Job job = Create();
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  const std::string w = Register("w1");
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_ASSIGNED);
  auto lease = Lease(w);
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->job_id(), job.id());
  EXPECT_EQ(lease->attempt(), 1);
  EXPECT_EQ(lease->world_size(), 1);
  EXPECT_THAT(lease->config_json(), HasSubstr("/data/t.jsonl"));
  EXPECT_EQ(lease->output_prefix(), "jobs/" + job.id() + "/attempts/1");
  EXPECT_FALSE(Lease(w).has_value()) << "one lease per assignment";

  ASSERT_TRUE(
      Report(lease->fence(), R"({"event":"started","total_steps":10,"start_step":0})").ok());
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(Report(lease->fence(),
                     R"({"event":"step","step":3,"total_steps":10,"loss":1.5,"tokens_per_s":99})")
                  .ok());
  auto progress = scheduler_->GetJob("a", job.id());
  EXPECT_EQ(progress->step(), 3);
  EXPECT_DOUBLE_EQ(progress->loss(), 1.5);
  ASSERT_TRUE(Complete(lease->fence(), true).ok());
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_SUCCEEDED);
  auto artifacts = scheduler_->ListArtifacts("a", job.id());
  ASSERT_TRUE(artifacts.ok());
  ASSERT_EQ(artifacts->size(), 1u);
  EXPECT_EQ((*artifacts)[0].name, "adapter/adapter_model.safetensors");
}

TEST_F(SchedulerFixture, HigherPriorityFirstThenFifo) {
  v1::Job a = Create("a", 0), b = Create("a", 5), c = Create("a", 0);
  const std::string w = Register("w1");
  std::vector<std::string> order;
  for (int i = 0; i < 3; ++i) {
    auto lease = Lease(w);
    ASSERT_TRUE(lease.has_value());
    order.push_back(lease->job_id());
    ASSERT_TRUE(Complete(lease->fence(), true).ok());
  }
  EXPECT_EQ(order, (std::vector<std::string>{b.id(), a.id(), c.id()}));
}

TEST_F(SchedulerFixture, JobMustFitTheWorkersMemory) {
  Register("small", /*memory_gib=*/8);
  v1::Job big = Create("a", 0, 1, int64_t{10} << 30);
  EXPECT_EQ(State(big.id()), v1::JOB_STATE_QUEUED);
  absl::Status placeable = scheduler_->CheckPlaceable({1, 1, int64_t{10} << 30, false});
  EXPECT_EQ(placeable.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(placeable.message()), HasSubstr("no registered worker can run this job"));
  EXPECT_THAT(std::string(placeable.message()), HasSubstr("small"));
  EXPECT_EQ(scheduler_->CheckPlaceable({1, 1, 0, /*needs_cuda=*/true}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(scheduler_->CheckPlaceable({1, /*devices_per_node=*/4, 0, false}).code(),
            absl::StatusCode::kFailedPrecondition)
      << "four devices per node need a GPU node";

  const std::string large = Register("large", 32);
  EXPECT_TRUE(scheduler_->CheckPlaceable({1, 1, int64_t{10} << 30, false}).ok());
  auto lease = Lease(large);
  ASSERT_TRUE(lease.has_value());
  EXPECT_EQ(lease->job_id(), big.id());
}

TEST_F(SchedulerFixture, GangPlacementIsAllOrNothing) {
  const std::string w1 = Register("w1");
  v1::Job job = Create("a", 0, /*nodes=*/2);
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_QUEUED) << "one node of two is not enough";
  EXPECT_FALSE(Lease(w1).has_value());
  const std::string w2 = Register("w22");
  auto l1 = Lease(w1), l2 = Lease(w2);
  ASSERT_TRUE(l1.has_value() && l2.has_value());
  EXPECT_EQ(l1->fence(), l2->fence());
  EXPECT_EQ(l1->world_size(), 2);
  EXPECT_EQ(l1->first_rank() + l2->first_rank(), 1);
  EXPECT_EQ(l1->master_addr(), l2->master_addr());
  EXPECT_EQ(l1->master_port(), l2->master_port());
  EXPECT_GT(l1->master_port(), 0);
}

TEST_F(SchedulerFixture, AGangRankThatFinishedFirstDoesNotFailTheAttempt) {
  const std::string w1 = Register("w1"), w2 = Register("w22");
  v1::Job job = Create("a", 0, /*nodes=*/2);
  auto l1 = Lease(w1), l2 = Lease(w2);
  ASSERT_TRUE(l1.has_value() && l2.has_value());
  const std::string& rank1_worker = l1->first_rank() == 1 ? w1 : w2;
  const std::string& rank0_worker = l1->first_rank() == 0 ? w1 : w2;
  v1::CompleteAttemptRequest done;
  done.set_fence(l1->fence());
  done.set_rank(1);
  done.set_succeeded(true);
  ASSERT_TRUE(scheduler_->CompleteAttempt(done).ok());
  Sleep(0.3);               // rank 0 is still uploading the adapter
  Heartbeat(rank1_worker);  // rank 1's node runs nothing any more
  Heartbeat(rank0_worker, {l1->fence()});
  EXPECT_NE(State(job.id()), v1::JOB_STATE_QUEUED) << "a finished rank is not an orphaned one";
  ASSERT_TRUE(Complete(l1->fence(), true).ok());
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(scheduler_->GetJob("a", job.id())->attempts(), 1);
}

TEST_F(SchedulerFixture, LostWorkerRequeuesAndTheNextAttemptResumesFromItsCheckpoint) {
  const std::string w1 = Register("w1");
  v1::Job job = Create();
  auto first = Lease(w1);
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(
      Report(first->fence(), R"({"event":"started","total_steps":10,"start_step":0})").ok());
  const std::string key = first->output_prefix() + "/checkpoints/step-00000004";
  ASSERT_TRUE(Report(first->fence(),
                     R"({"event":"checkpoint","step":4,"path":"/x","key":")" + key + R"("})")
                  .ok());
  // A checkpoint event without a key (its upload failed) must not become the resume point.
  ASSERT_TRUE(Report(first->fence(), R"({"event":"checkpoint","step":6,"path":"/y"})").ok());

  const std::string w2 = Register("w2");
  for (int i = 0; i < 8; ++i) {  // w2 keeps heartbeating, w1 has gone silent
    Sleep(0.1);
    Heartbeat(w2);
  }
  ASSERT_TRUE(scheduler_->Tick().ok());
  auto requeued = scheduler_->GetJob("a", job.id());
  EXPECT_EQ(requeued->attempts(), 2);
  EXPECT_EQ(requeued->checkpoint_step(), 4);
  auto second = Lease(w2);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->attempt(), 2);
  EXPECT_EQ(second->resume_key(), key);
  EXPECT_EQ(second->resume_step(), 4);
  auto latest = scheduler_->storage().GetBytes("jobs/" + job.id() + "/checkpoints/latest");
  ASSERT_TRUE(latest.ok());
  EXPECT_THAT(*latest, HasSubstr(key));
  EXPECT_TRUE(AnyStateReasonContains(job.id(), "heartbeat")) << "the requeue says why";

  // The first attempt's worker comes back: everything it sends is refused.
  auto report = Report(first->fence(), R"({"event":"step","step":5,"total_steps":10,"loss":9})");
  EXPECT_EQ(report.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Complete(first->fence(), true).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(State(job.id()), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(scheduler_->GetJob("a", job.id())->step(), 0)
      << "a superseded attempt's step was applied";
  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id(w1);
  heartbeat.add_running_fences(first->fence());
  auto answer = scheduler_->Heartbeat(heartbeat);
  ASSERT_TRUE(answer.ok());
  EXPECT_FALSE(answer->known()) << "an expired worker must register again";
  ASSERT_EQ(answer->stop_fences_size(), 1);
}

TEST_F(SchedulerFixture, FailedAttemptsRetryUpToTheLimitThenFail) {
  const std::string w = Register("w1");
  v1::Job job = Create("a", 0, 1, 1 << 30, /*max_retries=*/1);
  auto first = Lease(w);
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(Complete(first->fence(), false).ok());
  EXPECT_THAT(scheduler_->GetJob("a", job.id())->reason(), HasSubstr("retrying (attempt 2 of 2)"));
  auto second = Lease(w);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->attempt(), 2);
  ASSERT_TRUE(Complete(second->fence(), false).ok());
  auto failed = scheduler_->GetJob("a", job.id());
  EXPECT_EQ(failed->state(), v1::JOB_STATE_FAILED);
  EXPECT_THAT(failed->reason(), HasSubstr("no retries left"));
  int stderr_lines = 0;
  for (const v1::JobEvent& e : Events(job.id()))
    if (e.has_log() && e.log().source() == "stderr" &&
        e.log().line() == "Traceback: something broke")
      ++stderr_lines;
  EXPECT_EQ(stderr_lines, 2) << "each failed attempt's stderr tail is in the events";
}

TEST_F(SchedulerFixture, PermanentFailureIsNotRetried) {
  const std::string w = Register("w1");
  v1::Job job = Create();
  auto lease = Lease(w);
  ASSERT_TRUE(Complete(lease->fence(), false, /*permanent=*/true).ok());
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_FAILED);
  EXPECT_EQ(scheduler_->GetJob("a", job.id())->attempts(), 1);
}

TEST_F(SchedulerFixture, SilentTrainerIsFailedAsStalledAndRetried) {
  config_.stall_timeout_s = 0.3;
  Reopen();
  const std::string w = Register("w1");
  v1::Job job = Create();
  auto lease = Lease(w);
  ASSERT_TRUE(lease.has_value());
  for (int i = 0; i < 5; ++i) {
    Sleep(0.1);
    Heartbeat(w, {lease->fence()});  // the worker is alive; only its trainer is silent
  }
  ASSERT_TRUE(scheduler_->Tick().ok());
  EXPECT_TRUE(AnyStateReasonContains(job.id(), "stalled"));
  EXPECT_EQ(scheduler_->GetJob("a", job.id())->attempts(), 2)
      << "placed again at once on the live worker";
}

TEST_F(SchedulerFixture, AnAttemptTheWorkerNoLongerRunsIsFailedAtItsNextHeartbeat) {
  const std::string w = Register("w1");
  v1::Job job = Create();
  auto lease = Lease(w);
  ASSERT_TRUE(lease.has_value());
  Sleep(0.3);    // longer than two heartbeat intervals
  Heartbeat(w);  // ... and the attempt is not among the running ones
  EXPECT_TRUE(AnyStateReasonContains(job.id(), "no longer runs"));
}

TEST_F(SchedulerFixture, CancelStopsTheRunningAttempt) {
  const std::string w = Register("w1");
  v1::Job job = Create();
  auto lease = Lease(w);
  ASSERT_TRUE(Report(lease->fence(), R"({"event":"started","total_steps":10})").ok());
  auto cancelled = scheduler_->CancelJob("a", job.id(), "wrong data");
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(cancelled->reason(), HasSubstr("wrong data"));
  v1::HeartbeatRequest heartbeat;
  heartbeat.set_worker_id(w);
  heartbeat.add_running_fences(lease->fence());
  auto answer = scheduler_->Heartbeat(heartbeat);
  ASSERT_EQ(answer->stop_fences_size(), 1);
  EXPECT_EQ(answer->stop_fences(0), lease->fence());
  auto report = Report(lease->fence(), R"({"event":"step","step":1})");
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->stop());
  EXPECT_TRUE(Complete(lease->fence(), true).ok()) << "a late completion is accepted and ignored";
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_CANCELLED);
}

TEST_F(SchedulerFixture, IdempotencyKeyReturnsTheFirstJob) {
  v1::Job first = Create("a", 0, 1, 1 << 30, 2, "retry-me");
  v1::Job again = Create("a", 0, 1, 1 << 30, 2, "retry-me");
  EXPECT_EQ(first.id(), again.id());
  v1::Job other_tenant = Create("b", 0, 1, 1 << 30, 2, "retry-me");
  EXPECT_NE(first.id(), other_tenant.id());
}

TEST_F(SchedulerFixture, TenantsSeeOnlyTheirOwnJobs) {
  v1::Job mine = Create("a");
  Create("b");
  EXPECT_EQ(scheduler_->GetJob("b", mine.id()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler_->CancelJob("b", mine.id(), "").status().code(), absl::StatusCode::kNotFound);
  auto listed = scheduler_->ListJobs("a", v1::ListJobsRequest());
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->jobs_size(), 1);
  EXPECT_EQ(listed->jobs(0).id(), mine.id());
}

TEST_F(SchedulerFixture, ListJobsPagesNewestFirst) {
  std::vector<std::string> created;
  for (int i = 0; i < 5; ++i) created.push_back(Create().id());
  v1::ListJobsRequest request;
  request.set_page_size(2);
  std::vector<std::string> seen;
  int pages = 0;
  do {
    auto page = scheduler_->ListJobs("a", request);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const v1::Job& job : page->jobs()) seen.push_back(job.id());
    request.set_page_token(page->next_page_token());
    ++pages;
  } while (!request.page_token().empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  std::reverse(created.begin(), created.end());
  EXPECT_EQ(seen, created);
  request.set_page_token("garbage");
  EXPECT_EQ(scheduler_->ListJobs("a", request).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SchedulerFixture, QueuedJobsPerTenantAreLimited) {
  config_.max_queued_jobs_per_tenant = 2;
  Reopen();
  Create();
  Create();
  v1::CreateJobRequest request;
  request.mutable_spec()->set_model("/m");
  ValidatedJob job;
  job.spec_json = job.config_json = "{}";
  auto third = scheduler_->CreateJob("a", request, job);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(scheduler_->CreateJob("b", request, job).ok()) << "the limit is per tenant";
}

TEST_F(SchedulerFixture, EverythingAcknowledgedSurvivesAnAbruptRestart) {
  const std::string w = Register("w1");
  v1::Job job = Create();
  auto lease = Lease(w);
  ASSERT_TRUE(Report(lease->fence(), R"({"event":"started","total_steps":10})").ok());
  ASSERT_TRUE(
      Report(lease->fence(), R"({"event":"step","step":2,"total_steps":10,"loss":2.5})").ok());
  const size_t events_before = Events(job.id()).size();
  Reopen();  // no shutdown: the process image is simply gone
  auto job_after = scheduler_->GetJob("a", job.id());
  ASSERT_TRUE(job_after.ok());
  EXPECT_EQ(job_after->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job_after->step(), 2);
  EXPECT_EQ(Events(job.id()).size(), events_before);
  // The worker kept running: after the restart it reports on and completes.
  Heartbeat(w);
  ASSERT_TRUE(
      Report(lease->fence(), R"({"event":"step","step":3,"total_steps":10,"loss":2.0})").ok());
  ASSERT_TRUE(Complete(lease->fence(), true).ok());
  EXPECT_EQ(State(job.id()), v1::JOB_STATE_SUCCEEDED);
  std::vector<v1::JobEvent> events = Events(job.id());
  for (size_t i = 0; i < events.size(); ++i)
    EXPECT_EQ(events[i].seq(), static_cast<int64_t>(i + 1));
}

TEST_F(SchedulerFixture, MigrationsRecordTheSchemaVersionAndRefuseANewerDatabase) {
  scheduler_.reset();
  {
    auto db = Db::Open((dir_ / "scheduler.db").string());
    ASSERT_TRUE(db.ok());
    auto version = (*db)->Prepare("SELECT version FROM schema_version");
    ASSERT_TRUE(version.ok());
    ASSERT_TRUE(*version->Step());
    EXPECT_EQ(version->Int(0), LatestSchemaVersion());
    ASSERT_TRUE((*db)->Exec("UPDATE schema_version SET version = 999").ok());
  }
  auto db = Db::Open((dir_ / "scheduler.db").string());
  ASSERT_TRUE(db.ok());
  auto storage = OpenFileStore(dir_ / "storage");
  auto reopened = Scheduler::Open(std::move(*db), std::move(*storage), config_);
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(reopened.status().message()), HasSubstr("newer"));
}

TEST_F(SchedulerFixture, WatchResumesAfterAGivenSequenceNumber) {
  v1::Job job = Create();
  const std::string w = Register("w1");
  auto lease = Lease(w);
  for (int step = 1; step <= 4; ++step)
    ASSERT_TRUE(
        Report(lease->fence(), R"({"event":"step","step":)" + std::to_string(step) + "}").ok());
  std::vector<v1::JobEvent> all = Events(job.id());
  ASSERT_GE(all.size(), 6u);
  bool finished = true;
  auto tail = scheduler_->EventsAfter("a", job.id(), all[2].seq(), 100, &finished);
  ASSERT_TRUE(tail.ok());
  EXPECT_FALSE(finished);
  ASSERT_EQ(tail->size(), all.size() - 3);
  EXPECT_EQ((*tail)[0].seq(), all[3].seq());
}

TEST_F(SchedulerFixture, TrainerEventsOfAnyShapeNeverBreakTheScheduler) {
  const std::string w = Register("w1");
  v1::Job job = Create();
  auto lease = Lease(w);
  ASSERT_TRUE(Report(lease->fence(), R"({"event":"started","total_steps":"ten"})").ok());
  ASSERT_TRUE(Report(lease->fence(),
                     R"({"event":"step","step":1,"loss":2.5,"lr":0.001,"peak_rss_bytes":1000})")
                  .ok());
  // NaN and Inf are written as null by the trainer's JSON library.
  ASSERT_TRUE(Report(lease->fence(), R"({"event":"step","step":2,"loss":null,"lr":[1]})").ok());
  ASSERT_TRUE(
      Report(lease->fence(), R"({"event":"eval","step":2,"loss":1.75,"perplexity":5.75})").ok());
  ASSERT_TRUE(
      Report(lease->fence(), R"({"event":"error","code":"non_finite","message":"loss is NaN"})")
          .ok());
  ASSERT_TRUE(Report(lease->fence(), R"(not json at all)").ok());
  ASSERT_TRUE(Report(lease->fence(), R"([1,2,3])").ok());
  auto now = scheduler_->GetJob("a", job.id());
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->step(), 2);
  EXPECT_DOUBLE_EQ(now->loss(), 2.5) << "a NaN loss keeps the last finite one in the job";
  EXPECT_DOUBLE_EQ(now->eval_loss(), 1.75);
  EXPECT_EQ(now->peak_rss_bytes(), 1000);
  std::vector<v1::JobEvent> events = Events(job.id());
  int nan_steps = 0, raw_lines = 0;
  for (const v1::JobEvent& e : events) {
    if (e.has_step() && e.step().step() == 2 && std::isnan(e.step().loss())) ++nan_steps;
    if (e.has_log() && (e.log().line() == "not json at all" || e.log().line() == "[1,2,3]"))
      ++raw_lines;
  }
  EXPECT_EQ(nan_steps, 1) << "the event keeps the NaN for whoever watches";
  EXPECT_EQ(raw_lines, 2);
  auto snapshot = scheduler_->TakeSnapshot(0);
  ASSERT_TRUE(snapshot.ok());
  EXPECT_EQ(snapshot->trainer_errors["non_finite"], 1);
}

TEST_F(SchedulerFixture, RestartedWorkerLosesItsOldAttempts) {
  const std::string w = Register("w1");
  v1::Job job = Create();
  auto lease = Lease(w);
  ASSERT_TRUE(lease.has_value());
  const std::string again = Register("w1");  // same name: the agent restarted
  EXPECT_NE(again, w);
  EXPECT_TRUE(AnyStateReasonContains(job.id(), "restarted"));
  auto next = Lease(again);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->attempt(), 2);
}

}  // namespace
}  // namespace diablo::server::testing
