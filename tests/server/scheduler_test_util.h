// A Scheduler over a fresh SQLite file and file store in a temp directory,
// with helpers to register workers and create jobs, for the scheduler tests.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include "common/file_store.h"
#include "server/db.h"
#include "server/scheduler.h"

namespace diablo::server::testing {

class SchedulerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("diablo-sched-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    config_.storage_uri = "file://" + (dir_ / "storage").string();
    config_.heartbeat_interval_s = 0.1;
    config_.lease_timeout_s = 0.4;
    config_.stall_timeout_s = 60;
    Reopen();
  }
  void TearDown() override {
    scheduler_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Opens the store again, as a restarted scheduler does (the previous
  // instance is dropped without any shutdown step, like a kill -9).
  void Reopen() {
    scheduler_.reset();
    auto db = Db::Open((dir_ / "scheduler.db").string());
    ASSERT_TRUE(db.ok()) << db.status();
    auto storage = OpenFileStore(dir_ / "storage");
    ASSERT_TRUE(storage.ok()) << storage.status();
    auto scheduler = Scheduler::Open(std::move(*db), std::move(*storage), config_);
    ASSERT_TRUE(scheduler.ok()) << scheduler.status();
    scheduler_ = std::move(*scheduler);
  }

  std::string Register(const std::string& name, int64_t memory_gib = 16, int devices = 0,
                       const std::string& token_id = "t-worker") {
    v1::RegisterWorkerRequest request;
    request.set_name(name);
    request.set_host("10.0.0." + std::to_string(name.size()));
    request.set_devices(devices);
    request.set_device_kind(devices > 0 ? "cuda" : "cpu");
    request.set_memory_bytes(memory_gib << 30);
    auto response = scheduler_->RegisterWorker(request, token_id);
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return "";
    credentials_[response->worker_id()] = response->credential();
    return response->worker_id();
  }

  v1::Job Create(const std::string& tenant = "a", int priority = 0, int nodes = 1,
                 int64_t bytes = 1 << 30, int max_retries = 2, const std::string& key = "") {
    v1::CreateJobRequest request;
    request.set_name("job");
    request.set_priority(priority);
    request.set_nodes(nodes);
    request.set_max_retries(max_retries);
    request.set_idempotency_key(key);
    request.mutable_spec()->set_model("/models/m.gguf");
    ValidatedJob job;
    job.spec_json = R"({"model":"/models/m.gguf"})";
    job.config_json = R"({"model":"/models/m.gguf","data":{"train":"/data/t.jsonl"}})";
    job.estimated_bytes = bytes;
    auto created = scheduler_->CreateJob(tenant, request, job);
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? *created : v1::Job();
  }

  std::optional<v1::Lease> Lease(const std::string& worker_id) {
    v1::LeaseJobRequest request;
    request.set_worker_id(worker_id);
    auto response = scheduler_->LeaseJob(request);
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok() || !response->has_lease()) return std::nullopt;
    output_prefixes_[response->lease().fence()] = response->lease().output_prefix();
    return response->lease();
  }

  absl::StatusOr<v1::ReportEventsResponse> Report(int64_t fence, const std::string& event_json) {
    v1::ReportEventsRequest request;
    request.set_fence(fence);
    request.add_reports()->set_event_json(event_json);
    return scheduler_->ReportEvents(request);
  }

  absl::Status Complete(int64_t fence, bool succeeded, bool permanent = false) {
    v1::CompleteAttemptRequest request;
    request.set_fence(fence);
    request.set_succeeded(succeeded);
    request.set_permanent(permanent);
    request.set_reason(succeeded ? "" : "trainer rank 0 exited with code 1");
    request.add_stderr_tail("Traceback: something broke");
    if (succeeded) {
      auto* artifact = request.add_artifacts();
      artifact->set_name("adapter/adapter_model.safetensors");
      // Where the worker holding this fence was told to write.
      const auto prefix = output_prefixes_.find(fence);
      artifact->set_key(
          (prefix != output_prefixes_.end() ? prefix->second : std::string("jobs/x/attempts/1")) +
          "/output/adapter/adapter_model.safetensors");
      artifact->set_size_bytes(10);
      artifact->set_sha256(std::string(64, 'a'));
    }
    return scheduler_->CompleteAttempt(request);
  }

  void Heartbeat(const std::string& worker_id, std::vector<int64_t> running_fences = {}) {
    v1::HeartbeatRequest request;
    request.set_worker_id(worker_id);
    for (int64_t fence : running_fences) request.add_running_fences(fence);
    ASSERT_TRUE(scheduler_->Heartbeat(request).ok());
  }

  v1::JobState State(const std::string& id, const std::string& tenant = "a") {
    auto job = scheduler_->GetJob(tenant, id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->state() : v1::JOB_STATE_UNSPECIFIED;
  }

  std::vector<v1::JobEvent> Events(const std::string& id) {
    bool finished = false;
    auto events = scheduler_->EventsAfter("a", id, 0, 10000, &finished);
    EXPECT_TRUE(events.ok()) << events.status();
    return events.ok() ? *events : std::vector<v1::JobEvent>();
  }

  bool AnyStateReasonContains(const std::string& id, const std::string& text) {
    for (const v1::JobEvent& e : Events(id))
      if (e.has_state() && e.state().reason().find(text) != std::string::npos) return true;
    return false;
  }

  static void Sleep(double seconds) {
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  }

  std::filesystem::path dir_;
  SchedulerConfig config_;
  std::unique_ptr<Scheduler> scheduler_;
  std::map<int64_t, std::string> output_prefixes_;  // by fence, from Lease()
  std::map<std::string, std::string> credentials_;  // by worker id, from Register()
};

}  // namespace diablo::server::testing
