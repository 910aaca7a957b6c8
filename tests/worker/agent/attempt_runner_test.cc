// The worker agent's attempt runner, in process: a fake trainer script stands
// in for `diablo train --events` (tests/worker/agent/fake_trainer.py), a fake
// scheduler on a loopback port records every ReportEvents and CompleteAttempt,
// and storage is file:// in a temp directory.  The tests assert what a user of
// the service would see: events in order under the attempt's fence, a
// checkpoint in storage before it is reported, outputs with their SHA-256, and
// failures, permanent errors and stops reported as such.
#include "worker/agent/attempt_runner.h"

#include <gmock/gmock.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/file_store.h"
#include "common/rpc_client.h"
#include "common/sha256.h"
#include "spec/estimate.h"
#include "spec/model_source.h"
#include "tests/worker/agent/small_llama_config.h"
#include "worker/agent/memory_cap.h"

namespace diablo::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::UnorderedElementsAre;
using Clock = std::chrono::steady_clock;

constexpr int64_t kFence = 4242;
constexpr char kJobId[] = "j-agenttest";
constexpr char kOutputPrefix[] = "jobs/j-agenttest/attempts/1";
constexpr char kToken[] = "worker-secret";
constexpr char kCredential[] = "dwc_this-registrations-credential";

// Stands in for the scheduler's worker API: records every report and
// completion, checks what storage holds when a checkpoint is reported, and
// can answer "stop" (a cancelled job) once the trainer has started.
class FakeScheduler final : public v1::WorkerService::Service {
 public:
  explicit FakeScheduler(std::unique_ptr<ObjectStore> storage) : storage_(std::move(storage)) {}

  grpc::Status ReportEvents(grpc::ServerContext* context, const v1::ReportEventsRequest* request,
                            v1::ReportEventsResponse* response) override {
    std::lock_guard<std::mutex> lock(mu_);
    Arrival arrival;
    arrival.report = *request;
    arrival.authorization = Metadata(*context, "authorization");
    arrival.credential = Metadata(*context, "diablo-worker-credential");
    arrivals_.push_back(arrival);
    for (const v1::TrainerReport& report : request->reports()) {
      if (report.has_log_line()) {
        log_lines_.push_back(report.log_line());
        continue;
      }
      json event = json::parse(report.event_json(), nullptr, false);
      events_.push_back(event);
      if (event.value("event", "") == "started") started_ = true;
      if (event.value("event", "") == "checkpoint" && event.contains("key")) {
        // What a scheduler would name as `latest` must already be complete.
        const std::string key = event.value("key", "");
        std::map<std::string, std::string>& objects = checkpoint_objects_[key];
        auto listed = storage_->List(key + "/");
        if (listed.ok()) {
          for (const ObjectInfo& info : *listed) {
            auto bytes = storage_->GetBytes(info.key);
            objects[info.key.substr(key.size() + 1)] = bytes.ok() ? *bytes : "<unreadable>";
          }
        }
      }
    }
    if (stop_once_started_ && started_) response->set_stop(true);
    changed_.notify_all();
    return grpc::Status::OK;
  }

  grpc::Status CompleteAttempt(grpc::ServerContext* context,
                               const v1::CompleteAttemptRequest* request,
                               v1::CompleteAttemptResponse*) override {
    std::lock_guard<std::mutex> lock(mu_);
    Arrival arrival;
    arrival.complete = *request;
    arrival.authorization = Metadata(*context, "authorization");
    arrival.credential = Metadata(*context, "diablo-worker-credential");
    arrivals_.push_back(arrival);
    completions_.push_back(*request);
    changed_.notify_all();
    return grpc::Status::OK;
  }

  void StopOnceStarted() {
    std::lock_guard<std::mutex> lock(mu_);
    stop_once_started_ = true;
  }

  // True once `done` holds (checked under the lock), false after `timeout`.
  bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, timeout, done);
  }
  bool WaitForStarted(std::chrono::milliseconds timeout) {
    return WaitUntil([this] { return started_; }, timeout);
  }

  struct Arrival {
    std::optional<v1::ReportEventsRequest> report;
    std::optional<v1::CompleteAttemptRequest> complete;
    std::string authorization;
    std::string credential;
  };
  std::vector<Arrival> arrivals() {
    std::lock_guard<std::mutex> lock(mu_);
    return arrivals_;
  }
  std::vector<json> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  std::vector<std::string> event_kinds() {
    std::vector<std::string> kinds;
    for (const json& event : events()) kinds.push_back(event.value("event", "?"));
    return kinds;
  }
  std::vector<std::string> log_lines() {
    std::lock_guard<std::mutex> lock(mu_);
    return log_lines_;
  }
  std::vector<v1::CompleteAttemptRequest> completions() {
    std::lock_guard<std::mutex> lock(mu_);
    return completions_;
  }
  // Objects (relative name → content) under each checkpoint key at the
  // moment the checkpoint was reported.
  std::map<std::string, std::map<std::string, std::string>> checkpoint_objects() {
    std::lock_guard<std::mutex> lock(mu_);
    return checkpoint_objects_;
  }

 private:
  static std::string Metadata(const grpc::ServerContext& context, const char* key) {
    auto it = context.client_metadata().find(key);
    return it == context.client_metadata().end()
               ? std::string()
               : std::string(it->second.data(), it->second.size());
  }

  std::unique_ptr<ObjectStore> storage_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<Arrival> arrivals_;
  std::vector<json> events_;
  std::vector<std::string> log_lines_;
  std::vector<v1::CompleteAttemptRequest> completions_;
  std::map<std::string, std::map<std::string, std::string>> checkpoint_objects_;
  bool started_ = false;
  bool stop_once_started_ = false;
};

class AttemptRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "the fake trainer needs /usr/bin/python3";
    dir_ = fs::temp_directory_path() /
           ("diablo-agent-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "bin");
    // The agent runs settings.diablo_binary as `BINARY train CONFIG --events`.
    const fs::path trainer = dir_ / "bin" / "diablo";
    fs::copy_file(fs::path(DIABLO_SOURCE_DIR) / "tests/worker/agent/fake_trainer.py", trainer);
    fs::permissions(trainer, fs::perms::owner_all, fs::perm_options::add);

    auto storage = OpenFileStore(dir_ / "storage");
    ASSERT_TRUE(storage.ok()) << storage.status();
    storage_ = std::move(*storage);
    auto scheduler_view = OpenFileStore(dir_ / "storage");
    ASSERT_TRUE(scheduler_view.ok()) << scheduler_view.status();
    scheduler_ = std::make_unique<FakeScheduler>(std::move(*scheduler_view));

    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(scheduler_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);

    settings_.rpc.server = "127.0.0.1:" + std::to_string(port);
    settings_.rpc.token = kToken;
    settings_.rpc.timeout_s = 5;
    settings_.name = "w-test";
    settings_.work_dir = dir_ / "work";
    settings_.diablo_binary = trainer.string();
    settings_.kill_grace_s = 10;
    settings_.shutdown_grace_s = 10;
    auto channel = MakeChannel(settings_.rpc);
    ASSERT_TRUE(channel.ok()) << channel.status();
    stub_ = v1::WorkerService::NewStub(*channel);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }

  // A lease of one local rank whose config tells the fake trainer what to do.
  v1::Lease MakeLease(json fake) {
    fake["record"] = (dir_ / "record").string();
    json config = {{"model", "/models/m.gguf"},
                   {"data", {{"train", "/data/train.jsonl"}}},
                   {"optim", {{"max_steps", 4}}},
                   {"fake_trainer", fake}};
    v1::Lease lease;
    lease.set_job_id(kJobId);
    lease.set_attempt(1);
    lease.set_fence(kFence);
    lease.set_first_rank(0);
    lease.set_local_ranks(1);
    lease.set_world_size(1);
    lease.set_master_addr("127.0.0.1");
    lease.set_master_port(29517);
    lease.set_config_json(config.dump());
    lease.set_output_prefix(kOutputPrefix);
    lease.set_stall_timeout_s(600);
    return lease;
  }

  // Runs the attempt on another thread; `while_running` runs meanwhile on
  // this one.  Returns how long Run() took, or fails the test (and stops the
  // attempt) when it did not return within `deadline`.
  std::chrono::milliseconds RunAttempt(AttemptRunner& runner,
                                       const std::function<void()>& while_running = nullptr,
                                       std::chrono::seconds deadline = std::chrono::seconds(30)) {
    const auto start = Clock::now();
    std::promise<void> finished;
    std::future<void> done = finished.get_future();
    std::thread thread([&] {
      runner.Run();
      finished.set_value();
    });
    if (while_running) while_running();
    if (done.wait_for(deadline) != std::future_status::ready) {
      ADD_FAILURE() << "the attempt did not end within " << deadline.count() << " s";
      runner.Stop("test deadline");
    }
    thread.join();
    EXPECT_TRUE(runner.done());
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  }

  // What the fake trainer of `rank` saw (argv, environment, config, outputs).
  json Record(int rank = 0) {
    std::ifstream in(dir_ / ("record.rank" + std::to_string(rank) + ".json"));
    if (!in) return json();
    return json::parse(in, nullptr, false);
  }
  // Signals the fake trainer of `rank` noted, one per line.
  std::string SignalLog(int rank = 0) {
    std::ifstream in(dir_ / ("record.rank" + std::to_string(rank) + ".log"));
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  fs::path dir_;
  AgentSettings settings_;
  const WorkerIdentity identity_{"w-test", kCredential};
  std::unique_ptr<ObjectStore> storage_;
  std::unique_ptr<FakeScheduler> scheduler_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
};

TEST_F(AttemptRunnerTest, EventsReachTheSchedulerInOrderUnderTheAttemptsFence) {
  AttemptRunner runner(settings_, identity_, *stub_, *storage_, MakeLease({{"mode", "succeed"}}));
  RunAttempt(runner);

  EXPECT_THAT(scheduler_->event_kinds(),
              ElementsAre("started", "step", "step", "checkpoint", "step", "step", "finished"));
  std::vector<int64_t> steps;
  for (const json& event : scheduler_->events())
    if (event.value("event", "") == "step") steps.push_back(event.value("step", int64_t{0}));
  EXPECT_THAT(steps, ElementsAre(1, 2, 3, 4));
  const auto arrivals = scheduler_->arrivals();
  ASSERT_FALSE(arrivals.empty());
  for (const auto& arrival : arrivals) {
    EXPECT_EQ(arrival.authorization, std::string("Bearer ") + kToken);
    EXPECT_EQ(arrival.credential, kCredential)
        << "every call carries the registration's credential";
    if (arrival.report) {
      EXPECT_EQ(arrival.report->fence(), kFence);
      EXPECT_EQ(arrival.report->rank(), 0);
    }
  }
  ASSERT_TRUE(arrivals.back().complete.has_value()) << "the completion comes after every report";
  EXPECT_EQ(scheduler_->completions().size(), 1u);
  EXPECT_THAT(scheduler_->log_lines(), Contains(HasSubstr("fake trainer rank 0 starting")))
      << "the trainer's stderr is forwarded as log lines";

  // The trainer was started the documented way.
  json record = Record();
  ASSERT_TRUE(record.is_object()) << "the fake trainer never ran";
  const std::vector<std::string> argv = record["argv"];
  ASSERT_EQ(argv.size(), 3u);
  EXPECT_EQ(argv[0], "train");
  EXPECT_EQ(argv[2], "--events");
  EXPECT_EQ(record["env"]["RANK"], "0");
  EXPECT_EQ(record["env"]["WORLD_SIZE"], "1");
  EXPECT_EQ(record["env"]["MASTER_PORT"], "29517");
  EXPECT_FALSE(fs::exists(settings_.work_dir / "jobs" / "j-agenttest-attempt-1-rank-0"))
      << "a finished attempt's job directory is removed";
}

TEST_F(AttemptRunnerTest, ACheckpointIsInStorageBeforeTheEventThatReportsIt) {
  AttemptRunner runner(settings_, identity_, *stub_, *storage_, MakeLease({{"mode", "succeed"}}));
  RunAttempt(runner);

  const std::string key = std::string(kOutputPrefix) + "/checkpoints/step-00000002";
  json checkpoint;
  for (const json& event : scheduler_->events())
    if (event.value("event", "") == "checkpoint") checkpoint = event;
  ASSERT_TRUE(checkpoint.is_object()) << "no checkpoint event was reported";
  EXPECT_EQ(checkpoint.value("key", ""), key) << "the report names the storage key";
  EXPECT_EQ(checkpoint.value("step", 0), 2);
  auto seen = scheduler_->checkpoint_objects();
  ASSERT_EQ(seen.count(key), 1u);
  EXPECT_THAT(seen[key], UnorderedElementsAre(
                             std::make_pair("adapter_model.safetensors", "checkpoint at step 2"),
                             std::make_pair("trainer_state.json", R"({"step": 2})")))
      << "every file of the checkpoint was in storage when the scheduler heard of it";
}

TEST_F(AttemptRunnerTest, OutputsAreUploadedWithTheirSha256AndListedInTheCompletion) {
  AttemptRunner runner(settings_, identity_, *stub_, *storage_, MakeLease({{"mode", "succeed"}}));
  RunAttempt(runner);

  const auto completions = scheduler_->completions();
  ASSERT_EQ(completions.size(), 1u);
  const v1::CompleteAttemptRequest& done = completions[0];
  EXPECT_TRUE(done.succeeded()) << done.reason();
  EXPECT_EQ(done.fence(), kFence);
  EXPECT_EQ(done.rank(), 0);
  EXPECT_FALSE(done.permanent());

  // The trainer computed each output's SHA-256 itself (Python's hashlib).
  json expected = Record()["outputs"];
  ASSERT_TRUE(expected.is_object()) << "the fake trainer wrote no outputs";
  std::vector<std::string> names;
  for (const v1::UploadedArtifact& artifact : done.artifacts()) {
    names.push_back(artifact.name());
    SCOPED_TRACE(artifact.name());
    ASSERT_TRUE(expected.contains(artifact.name()));
    EXPECT_EQ(artifact.sha256(), expected[artifact.name()]["sha256"].get<std::string>());
    EXPECT_EQ(artifact.size_bytes(), expected[artifact.name()]["size"]);
    EXPECT_EQ(artifact.key(), std::string(kOutputPrefix) + "/output/" + artifact.name());
    auto stored = storage_->GetBytes(artifact.key());
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(Sha256Hex(*stored), artifact.sha256()) << "storage holds what was announced";
  }
  EXPECT_THAT(names, UnorderedElementsAre("adapter/adapter_model.safetensors",
                                          "adapter/adapter_config.json", "train_config.json"))
      << "checkpoints went up during the run and are not artifacts";
}

TEST_F(AttemptRunnerTest, InputsAreFetchedAndTheTrainersConfigNamesTheLocalCopies) {
  const std::string dataset = "{\"text\":\"hello\"}\n";
  ASSERT_TRUE(storage_->PutBytes("files/f-data", dataset).ok());
  v1::Lease lease = MakeLease({{"mode", "succeed"}});
  v1::Input* data = lease.add_inputs();
  data->set_field("data.train");
  data->set_key("files/f-data");
  // sha256sum of the dataset above, computed outside the project.
  data->set_sha256("61089649a563a525014d86b167cbe5fae69e2fe431245d6bec5e65f298906b3a");
  data->set_name("train.jsonl");
  v1::Input* model = lease.add_inputs();
  model->set_field("model");
  model->set_path("file:///shared/models/m.gguf");
  AttemptRunner runner(settings_, identity_, *stub_, *storage_, lease);
  RunAttempt(runner);

  json config = Record()["config"];
  ASSERT_TRUE(config.is_object()) << "the fake trainer never ran";
  EXPECT_EQ(config["model"], "/shared/models/m.gguf") << "shared paths are used in place";
  const std::string local = config["data"]["train"];
  EXPECT_THAT(local, HasSubstr(settings_.work_dir.string()));
  EXPECT_THAT(local, HasSubstr("train.jsonl"));
  std::ifstream in(local);
  std::stringstream content;
  content << in.rdbuf();
  EXPECT_EQ(content.str(), dataset) << "the upload was fetched into the local cache";
  EXPECT_THAT(config.value("output_dir", ""), HasSubstr(settings_.work_dir.string()));
}

TEST_F(AttemptRunnerTest, AnInputWithTheWrongChecksumFailsTheAttemptBeforeTheTrainerStarts) {
  ASSERT_TRUE(storage_->PutBytes("files/f-data", "{\"text\":\"tampered\"}\n").ok());
  v1::Lease lease = MakeLease({{"mode", "succeed"}});
  v1::Input* data = lease.add_inputs();
  data->set_field("data.train");
  data->set_key("files/f-data");
  data->set_sha256(std::string(64, '0'));
  data->set_name("train.jsonl");
  AttemptRunner runner(settings_, identity_, *stub_, *storage_, lease);
  RunAttempt(runner);

  EXPECT_FALSE(Record().is_object()) << "the trainer must not run on unverified inputs";
  const auto completions = scheduler_->completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_FALSE(completions[0].succeeded());
  EXPECT_THAT(completions[0].reason(), HasSubstr("data.train"));
  EXPECT_THAT(completions[0].reason(), HasSubstr("SHA-256"));
  EXPECT_FALSE(fs::exists(settings_.work_dir / "cache" / std::string(64, '0') / "train.jsonl"))
      << "a mismatching download is not kept in the cache";
}

TEST_F(AttemptRunnerTest, AResumedAttemptDownloadsTheCheckpointAndPassesResume) {
  const std::string from = "jobs/j-agenttest/attempts/0/checkpoints/step-00000002";
  ASSERT_TRUE(storage_->PutBytes(from + "/trainer_state.json", R"({"step": 2})").ok());
  ASSERT_TRUE(storage_->PutBytes(from + "/adapter_model.safetensors", "weights").ok());
  v1::Lease lease = MakeLease({{"mode", "succeed"}});
  lease.set_resume_key(from);
  lease.set_resume_step(2);
  AttemptRunner runner(settings_, identity_, *stub_, *storage_, lease);
  RunAttempt(runner);

  json record = Record();
  ASSERT_TRUE(record.is_object()) << "the fake trainer never ran";
  EXPECT_THAT(record["argv"].get<std::vector<std::string>>(), Contains("--resume"));
  EXPECT_EQ(record.value("resumed_from", ""), "step-00000002")
      << "checkpoints/latest names the downloaded checkpoint";
  EXPECT_EQ(record.value("resumed_state", ""), R"({"step": 2})");
  const auto completions = scheduler_->completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_TRUE(completions[0].succeeded()) << completions[0].reason();
}

TEST_F(AttemptRunnerTest, ACrashCompletesTheAttemptAsFailedWithTheStderrTail) {
  AttemptRunner runner(settings_, identity_, *stub_, *storage_, MakeLease({{"mode", "crash"}}));
  RunAttempt(runner);

  const auto completions = scheduler_->completions();
  ASSERT_EQ(completions.size(), 1u);
  const v1::CompleteAttemptRequest& done = completions[0];
  EXPECT_FALSE(done.succeeded());
  EXPECT_FALSE(done.permanent()) << "a crash may be transient: it is retried";
  EXPECT_EQ(done.exit_code(), 2);
  EXPECT_THAT(done.reason(), HasSubstr("exited with code 2"));
  EXPECT_EQ(done.artifacts_size(), 0);
  // The last 30 lines, in order.
  ASSERT_EQ(done.stderr_tail_size(), 30);
  EXPECT_EQ(done.stderr_tail(0), "fake crash line 10");
  EXPECT_EQ(done.stderr_tail(29), "fake crash line 39");
  EXPECT_THAT(scheduler_->event_kinds(), ElementsAre("started"));
}

TEST_F(AttemptRunnerTest, APermanentTrainerErrorCompletesTheAttemptAsPermanent) {
  AttemptRunner runner(
      settings_, identity_, *stub_, *storage_,
      MakeLease({{"mode", "error"}, {"code", "bad_config"}, {"message", "optim.lr: must be > 0"}}));
  RunAttempt(runner);

  const auto completions = scheduler_->completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_FALSE(completions[0].succeeded());
  EXPECT_TRUE(completions[0].permanent()) << "retrying the same config cannot help";
  EXPECT_EQ(completions[0].exit_code(), 1);
  EXPECT_THAT(completions[0].reason(), HasSubstr("bad_config: optim.lr: must be > 0"));
  EXPECT_THAT(scheduler_->event_kinds(), ElementsAre("started", "error"))
      << "the error event itself reaches the job's events";
}

TEST_F(AttemptRunnerTest, AnOrdinaryTrainerErrorIsRetried) {
  AttemptRunner runner(
      settings_, identity_, *stub_, *storage_,
      MakeLease({{"mode", "error"}, {"code", "failed"}, {"message", "connection reset"}}));
  RunAttempt(runner);

  const auto completions = scheduler_->completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_FALSE(completions[0].succeeded());
  EXPECT_FALSE(completions[0].permanent());
  EXPECT_THAT(completions[0].reason(), HasSubstr("failed: connection reset"));
}

TEST_F(AttemptRunnerTest, EachLocalRankGetsTheTorchrunEnvironmentAndOnlyRankZeroReports) {
  v1::Lease lease = MakeLease({{"mode", "succeed"}});
  lease.set_local_ranks(2);
  lease.set_world_size(2);
  AttemptRunner runner(settings_, identity_, *stub_, *storage_, lease);
  RunAttempt(runner);

  for (int rank = 0; rank < 2; ++rank) {
    SCOPED_TRACE(rank);
    json env = Record(rank)["env"];
    ASSERT_TRUE(env.is_object()) << "rank " << rank << " never ran";
    EXPECT_EQ(env["RANK"], std::to_string(rank));
    EXPECT_EQ(env["LOCAL_RANK"], std::to_string(rank));
    EXPECT_EQ(env["LOCAL_WORLD_SIZE"], "2");
    EXPECT_EQ(env["WORLD_SIZE"], "2");
    EXPECT_EQ(env["MASTER_ADDR"], "127.0.0.1");
    EXPECT_EQ(env["MASTER_PORT"], "29517");
  }
  for (const json& event : scheduler_->events())
    EXPECT_FALSE(event.contains("from_rank")) << "rank 1's event was forwarded: " << event.dump();
  EXPECT_THAT(scheduler_->log_lines(), Contains(HasSubstr("rank 1: fake trainer rank 1 starting")))
      << "stderr lines say which rank wrote them";
  const auto completions = scheduler_->completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_TRUE(completions[0].succeeded()) << completions[0].reason();
}

TEST_F(AttemptRunnerTest, ASecondNodeOfAGangNumbersItsRanksGloballyAndLeavesReportingToRankZero) {
  v1::Lease lease = MakeLease({{"mode", "succeed"}});
  lease.set_first_rank(2);
  lease.set_local_ranks(2);
  lease.set_world_size(4);
  AttemptRunner runner(settings_, identity_, *stub_, *storage_, lease);
  RunAttempt(runner);

  for (int local = 0; local < 2; ++local) {
    SCOPED_TRACE(local);
    json env = Record(2 + local)["env"];
    ASSERT_TRUE(env.is_object()) << "rank " << 2 + local << " never ran";
    EXPECT_EQ(env["RANK"], std::to_string(2 + local));
    EXPECT_EQ(env["LOCAL_RANK"], std::to_string(local));
    EXPECT_EQ(env["WORLD_SIZE"], "4");
  }
  EXPECT_TRUE(scheduler_->events().empty()) << "only global rank 0 reports trainer events";
  const auto completions = scheduler_->completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_TRUE(completions[0].succeeded()) << completions[0].reason();
  EXPECT_EQ(completions[0].rank(), 2) << "the completion names the node's first rank";
  EXPECT_EQ(completions[0].artifacts_size(), 0) << "rank 0's node uploads the outputs";
}

// A rank that fails leaves the others blocked in a collective that cannot
// complete: they get SIGTERM, then SIGKILL after the kill grace, and the
// attempt ends as the failed rank's failure rather than hanging.
TEST_F(AttemptRunnerTest, WhenOneRankFailsTheOthersAreStoppedWithinTheKillGrace) {
  settings_.kill_grace_s = 1;
  v1::Lease lease = MakeLease({{"mode", "gang_failure"}});
  lease.set_local_ranks(2);
  lease.set_world_size(2);
  AttemptRunner runner(settings_, identity_, *stub_, *storage_, lease);
  const auto elapsed = RunAttempt(runner);

  EXPECT_LT(elapsed, std::chrono::seconds(15)) << "the hung rank was waited for";
  EXPECT_EQ(SignalLog(1), "SIGTERM\n") << "rank 1 was asked to stop before it was killed";
  const auto completions = scheduler_->completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_FALSE(completions[0].succeeded());
  EXPECT_THAT(completions[0].reason(), HasSubstr("rank 0 exited with code 1"));
  EXPECT_FALSE(completions[0].permanent());
}

TEST_F(AttemptRunnerTest, StopSendsSigtermAndTheAttemptEndsWithinTheGracePeriod) {
  settings_.kill_grace_s = 20;
  AttemptRunner runner(settings_, identity_, *stub_, *storage_,
                       MakeLease({{"mode", "wait_for_term"}}));
  Clock::time_point stopped_at;
  const auto elapsed = RunAttempt(runner, [&] {
    ASSERT_TRUE(scheduler_->WaitForStarted(std::chrono::seconds(20)));
    stopped_at = Clock::now();
    runner.Stop("cancelled by the test");
  });
  const auto after_stop = Clock::now() - stopped_at;

  EXPECT_EQ(SignalLog(), "SIGTERM\n");
  EXPECT_LT(after_stop, std::chrono::seconds(10))
      << "the trainer left on SIGTERM; nothing waited for the " << settings_.kill_grace_s
      << " s grace (Run took " << elapsed.count() << " ms)";
  EXPECT_TRUE(scheduler_->completions().empty())
      << "an attempt the scheduler stopped has already ended there";
}

TEST_F(AttemptRunnerTest, ATrainerThatIgnoresSigtermIsKilledAfterTheKillGrace) {
  settings_.kill_grace_s = 1;
  settings_.shutdown_grace_s = 30;  // not the grace of a cancel
  AttemptRunner runner(settings_, identity_, *stub_, *storage_,
                       MakeLease({{"mode", "ignore_term"}}));
  Clock::time_point stopped_at;
  RunAttempt(runner, [&] {
    ASSERT_TRUE(scheduler_->WaitForStarted(std::chrono::seconds(20)));
    stopped_at = Clock::now();
    runner.Stop("cancelled by the test");
  });
  const auto after_stop = Clock::now() - stopped_at;

  EXPECT_EQ(SignalLog(), "SIGTERM\n") << "SIGTERM first, then the trainer kept running";
  EXPECT_GE(after_stop, std::chrono::milliseconds(900)) << "killed before the grace period";
  EXPECT_LT(after_stop, std::chrono::seconds(10)) << "not killed after the 1 s grace period";
  EXPECT_TRUE(scheduler_->completions().empty());
}

TEST_F(AttemptRunnerTest, AShutdownKillsATrainerThatIgnoresSigtermAfterTheShutdownGrace) {
  settings_.shutdown_grace_s = 1;
  settings_.kill_grace_s = 30;  // not the grace of a shutdown
  AttemptRunner runner(settings_, identity_, *stub_, *storage_,
                       MakeLease({{"mode", "ignore_term"}}));
  Clock::time_point stopped_at;
  RunAttempt(runner, [&] {
    ASSERT_TRUE(scheduler_->WaitForStarted(std::chrono::seconds(20)));
    stopped_at = Clock::now();
    runner.Stop("worker w-test is shutting down", /*report=*/true);
  });
  const auto after_stop = Clock::now() - stopped_at;

  EXPECT_EQ(SignalLog(), "SIGTERM\n") << "SIGTERM first, then the trainer kept running";
  EXPECT_GE(after_stop, std::chrono::milliseconds(900)) << "killed before the grace period";
  EXPECT_LT(after_stop, std::chrono::seconds(10)) << "not killed after the 1 s grace period";
  const auto completions = scheduler_->completions();
  ASSERT_EQ(completions.size(), 1u) << "a worker shutting down reports its attempts";
  EXPECT_FALSE(completions[0].succeeded());
  EXPECT_FALSE(completions[0].permanent()) << "it is retried elsewhere";
  EXPECT_EQ(completions[0].exit_code(), -9) << "ended by SIGKILL";
  EXPECT_THAT(completions[0].reason(), HasSubstr("shutting down"));
}

TEST_F(AttemptRunnerTest, AShutdownUploadsTheCheckpointWrittenOnSigtermAndReportsTheAttempt) {
  AttemptRunner runner(settings_, identity_, *stub_, *storage_,
                       MakeLease({{"mode", "wait_for_term"}, {"checkpoint_on_term", true}}));
  RunAttempt(runner, [&] {
    ASSERT_TRUE(scheduler_->WaitForStarted(std::chrono::seconds(20)));
    runner.Stop("worker w-test is shutting down", /*report=*/true);
  });

  const std::string key = std::string(kOutputPrefix) + "/checkpoints/step-00000003";
  EXPECT_EQ(scheduler_->checkpoint_objects().count(key), 1u)
      << "the checkpoint written on SIGTERM was uploaded, then reported";
  EXPECT_THAT(scheduler_->event_kinds(), ElementsAre("started", "checkpoint", "error"));
  const auto completions = scheduler_->completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_FALSE(completions[0].succeeded());
  EXPECT_FALSE(completions[0].permanent());
  EXPECT_THAT(completions[0].reason(), HasSubstr("shutting down"));
}

TEST_F(AttemptRunnerTest, TheSchedulerCancellingTheAttemptStopsTheTrainer) {
  scheduler_->StopOnceStarted();
  AttemptRunner runner(settings_, identity_, *stub_, *storage_,
                       MakeLease({{"mode", "wait_for_term"}}));
  RunAttempt(runner);

  EXPECT_EQ(SignalLog(), "SIGTERM\n") << "the answer stop=true reached the trainer as SIGTERM";
  EXPECT_TRUE(scheduler_->completions().empty())
      << "a cancelled attempt is not completed again by the worker";
  EXPECT_THAT(scheduler_->event_kinds(), Not(Contains("finished")));
}

// The input cache is bounded (--cache-max-bytes): a second dataset evicts
// the first once the first attempt is over, and an input that cannot fit is
// fetched into its attempt's own directory instead of failing the attempt.
TEST_F(AttemptRunnerTest, TheInputCacheEvictsOldInputsAndBypassesOnesThatCannotFit) {
  settings_.cache_max_bytes = 1 << 20;
  auto run_on = [&](const std::string& key, const std::string& content) {
    EXPECT_TRUE(storage_->PutBytes(key, content).ok());
    v1::Lease lease = MakeLease({{"mode", "succeed"}});
    v1::Input* data = lease.add_inputs();
    data->set_field("data.train");
    data->set_key(key);
    data->set_sha256(Sha256Hex(content));
    data->set_name("train.jsonl");
    AttemptRunner runner(settings_, identity_, *stub_, *storage_, lease);
    RunAttempt(runner);
    return std::string(Record()["config"]["data"]["train"]);
  };
  const std::string first(600 << 10, 'a'), second(600 << 10, 'b'), huge(3 << 20, 'c');
  const fs::path cache = settings_.work_dir / "cache";
  const std::string first_path = run_on("files/f-first", first);
  EXPECT_EQ(fs::path(first_path), cache / Sha256Hex(first) / "train.jsonl");
  EXPECT_TRUE(fs::exists(first_path));
  const std::string second_path = run_on("files/f-second", second);
  EXPECT_TRUE(fs::exists(second_path));
  EXPECT_FALSE(fs::exists(first_path)) << "two datasets do not fit in 1 MiB: the older goes";

  const std::string huge_path = run_on("files/f-huge", huge);
  EXPECT_THAT(huge_path, Not(HasSubstr(cache.string())));
  EXPECT_THAT(huge_path, HasSubstr("inputs"));
  EXPECT_FALSE(fs::exists(huge_path)) << "the attempt's own copy went with its directory";
  EXPECT_TRUE(fs::exists(second_path)) << "an input that cannot fit evicts nothing";
  EXPECT_THAT(scheduler_->log_lines(), Contains(HasSubstr("--cache-max-bytes")));
  const auto completions = scheduler_->completions();
  ASSERT_FALSE(completions.empty());
  EXPECT_TRUE(completions.back().succeeded()) << completions.back().reason();
}

// The memory cap (worker/agent/memory_cap.h): what each trainer runs under,
// what the job's log says about it, and what the owner reads when the job
// outgrew it.
TEST_F(AttemptRunnerTest, AnExplicitMemoryCapIsEachTrainersDataLimitAndTheJobsLogSaysSo) {
  settings_.trainer_memory_cap = {TrainerMemoryCapSetting::Mode::kFixed, int64_t{3} << 30};
  AttemptRunner runner(settings_, identity_, *stub_, *storage_, MakeLease({{"mode", "succeed"}}));
  RunAttempt(runner);

  EXPECT_EQ(Record()["rlimit_data"], json::array({int64_t{3} << 30, int64_t{3} << 30}));
  EXPECT_THAT(scheduler_->log_lines(),
              Contains(HasSubstr("memory cap 3.0 GiB (--trainer-memory-cap)")));
}

TEST_F(AttemptRunnerTest, AutoCapsATrainerAtItsJobsEstimateFromTheFetchedModel) {
  // A config-only Llama, and a config the real trainer's parser accepts (the
  // fake trainer's instructions go beside it).
  const fs::path model = dir_ / "shared" / "model";
  fs::create_directories(model);
  std::ofstream(model / "config.json") << agent::testing::SmallLlamaConfig().dump();
  std::ofstream(dir_ / "bin" / "fake_trainer.json")
      << json{{"mode", "succeed"}, {"record", (dir_ / "record").string()}}.dump();
  v1::Lease lease = MakeLease({});
  lease.set_config_json(json{
      {"model", "/submitted/model"},
      {"method", {{"name", "diablo"}, {"blocks", 8}}},
      {"data", {{"train", "/data/train.jsonl"}, {"max_seq_len", 64}}},
      {"optim", {{"max_steps", 4}, {"global_batch", 2}}},
      {"threads", 3}}.dump());
  v1::Input* input = lease.add_inputs();
  input->set_field("model");
  input->set_path("file://" + model.string());
  AttemptRunner runner(settings_, identity_, *stub_, *storage_, lease);
  RunAttempt(runner);

  estimate::EstimateOptions options;  // the job's, written out by hand
  options.blocks = 8;
  options.micro_batch = 2;
  options.seq_len = 64;
  const int64_t estimate = static_cast<int64_t>(
      estimate::EstimateTraining(estimate::ReadModelSource(model.string()).config, options)
          .memory.total);
  const int64_t cap =
      AutoMemoryCapBytes(estimate, kDefaultTrainerMemoryHeadroom, TrainerRuntimeBytes(3));
  EXPECT_EQ(Record()["rlimit_data"], json::array({cap, cap}));
  EXPECT_THAT(scheduler_->log_lines(),
              Contains(HasSubstr("memory cap " + FormatMemory(cap) + " = estimate " +
                                 FormatMemory(estimate) + " × 1.5")));
  const auto completions = scheduler_->completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_TRUE(completions[0].succeeded()) << completions[0].reason();
}

TEST_F(AttemptRunnerTest, AJobTheAgentCannotEstimateRunsWithoutACapAndTheLogSaysWhy) {
  struct rlimit own = {};
  ASSERT_EQ(getrlimit(RLIMIT_DATA, &own), 0);
  // The fake trainer's own key is no part of the schema: not estimable.
  AttemptRunner runner(settings_, identity_, *stub_, *storage_, MakeLease({{"mode", "succeed"}}));
  RunAttempt(runner);

  const int64_t inherited = own.rlim_cur == RLIM_INFINITY ? -1 : static_cast<int64_t>(own.rlim_cur);
  EXPECT_EQ(Record()["rlimit_data"][0], inherited);
  EXPECT_THAT(scheduler_->log_lines(),
              Contains(HasSubstr("no memory cap: cannot read the job's config")));
}

TEST_F(AttemptRunnerTest, RunningOutOfMemoryUnderTheCapIsPermanentAndTheReasonNamesTheCap) {
  settings_.trainer_memory_cap = {TrainerMemoryCapSetting::Mode::kFixed, int64_t{3} << 30};
  AttemptRunner runner(settings_, identity_, *stub_, *storage_,
                       MakeLease({{"mode", "error"},
                                  {"code", "out_of_memory"},
                                  {"message", "out of host memory: lower optim.micro_batch"}}));
  RunAttempt(runner);

  const auto completions = scheduler_->completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_FALSE(completions[0].succeeded());
  EXPECT_TRUE(completions[0].permanent()) << "the same job outgrows the same cap on any retry";
  EXPECT_THAT(
      completions[0].reason(),
      HasSubstr("(out_of_memory: out of host memory: lower optim.micro_batch); the "
                "trainer ran under this worker's memory cap 3.0 GiB (--trainer-memory-cap)"));
}

}  // namespace
}  // namespace diablo::agent
