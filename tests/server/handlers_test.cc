// The scheduler's gRPC handlers in process: a real SchedulerServer (SQLite
// file and file:// storage in a temp directory) on a loopback port, called
// through the generated stubs as diablo-ctl and diablo-worker call it.  The
// tests pin what a caller sees: status codes for missing or wrong-role
// tokens, tenant isolation, idempotent submits, field-naming validation
// errors, bounded long polls, rate limits, checked uploads and downloads.
#include <gmock/gmock.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/file_store.h"
#include "diablo/v1/file.grpc.pb.h"
#include "diablo/v1/job.grpc.pb.h"
#include "diablo/v1/system.grpc.pb.h"
#include "diablo/v1/worker.grpc.pb.h"
#include "server/auth.h"
#include "server/db.h"
#include "server/scheduler_server.h"

namespace diablo::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

// A small Llama config the estimator reads, and a two-record dataset.
constexpr char kModelConfig[] = R"({"architectures":["LlamaForCausalLM"],"model_type":"llama",
  "vocab_size":1000,"hidden_size":256,"intermediate_size":512,"num_hidden_layers":4,
  "num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":512,
  "rms_norm_eps":1e-5,"tie_word_embeddings":true})";
constexpr char kDataset[] =
    "{\"instruction\":\"Say hi\",\"output\":\"hi\"}\n{\"instruction\":\"Say bye\",\"output\":"
    "\"bye\"}\n";
// sha256sum of kDataset, computed outside the project.
constexpr char kDatasetSha256[] =
    "7a4be7691c9f0a92bb55a03d2330eca5379c2914469be239451f1b169892bcb3";

// 2.5 MiB of bytes (i * 31 + 7) % 251, so a download spans three chunks; its
// SHA-256 was computed outside the project (Python's hashlib).
std::string BigArtifact() {
  std::string data((5 << 20) / 2, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 31 + 7) % 251);
  return data;
}
constexpr char kBigArtifactSha256[] =
    "e7ef5df249549b67da4bba7fb285f225c45843e57c799cd3af6387f6be994973";

class HandlersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("diablo-handlers-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    fs::create_directories(dir_ / "model");
    std::ofstream(dir_ / "model" / "config.json") << kModelConfig;
    std::ofstream(dir_ / "train.jsonl") << kDataset;
  }

  void TearDown() override {
    if (server_ != nullptr) {
      server_->Shutdown(absl::ZeroDuration());
      server_->Wait();
      server_.reset();
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Creates the tokens, then starts the scheduler on a free loopback port.
  void Start(AuthOptions auth = {}) {
    {
      auto db = Db::Open((dir_ / "data" / "scheduler.db").string());
      ASSERT_TRUE(db.ok()) << db.status();
      std::string id;
      auto a = CreateToken(**db, "tenant-a", Role::kUser, "a", &id);
      auto a2 = CreateToken(**db, "tenant-a", Role::kUser, "a-second", &id);
      auto b = CreateToken(**db, "tenant-b", Role::kUser, "b", &id);
      auto worker = CreateToken(**db, "ops", Role::kWorker, "worker", &id);
      ASSERT_TRUE(a.ok() && a2.ok() && b.ok() && worker.ok());
      user_a_ = *a;
      user_a2_ = *a2;
      user_b_ = *b;
      worker_ = *worker;
    }
    SchedulerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.data_dir = (dir_ / "data").string();
    options.auth = auth;
    // Both tenants may read the test's model and data in place; the data
    // directory below stays protected whatever this grants.
    for (const char* tenant : {"tenant-a", "tenant-b"})
      options.inputs.Grant(tenant, {}, {dir_.string()});
    auto server = SchedulerServer::BuildAndStart(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                       grpc::InsecureChannelCredentials());
    jobs_ = v1::JobService::NewStub(channel);
    files_ = v1::FileService::NewStub(channel);
    workers_ = v1::WorkerService::NewStub(channel);
    fleet_ = v1::FleetService::NewStub(channel);
    system_ = v1::SystemService::NewStub(channel);
  }

  // A call context with `token` (none when empty) and a deadline.
  static std::unique_ptr<grpc::ClientContext> Ctx(
      const std::string& token, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto context = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
    context->set_deadline(std::chrono::system_clock::now() + timeout);
    return context;
  }

  v1::CreateJobRequest ValidRequest() {
    v1::CreateJobRequest request;
    request.set_name("tiny");
    request.mutable_spec()->set_model((dir_ / "model").string());
    request.mutable_spec()->mutable_data()->set_train((dir_ / "train.jsonl").string());
    request.mutable_spec()->mutable_optim()->set_max_steps(10);
    request.set_queue_anyway(true);  // no worker needs to be registered
    return request;
  }

  grpc::Status Create(const std::string& token, const v1::CreateJobRequest& request, v1::Job* job) {
    return jobs_->CreateJob(Ctx(token).get(), request, job);
  }
  v1::Job MustCreate(const std::string& token) {
    v1::Job job;
    grpc::Status status = Create(token, ValidRequest(), &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  grpc::Status Get(const std::string& token, const std::string& id, v1::Job* job = nullptr) {
    v1::GetJobRequest request;
    request.set_id(id);
    v1::Job ignored;
    return jobs_->GetJob(Ctx(token).get(), request, job != nullptr ? job : &ignored);
  }

  std::vector<std::string> ListIds(const std::string& token) {
    v1::ListJobsResponse response;
    grpc::Status status = jobs_->ListJobs(Ctx(token).get(), v1::ListJobsRequest(), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<std::string> ids;
    for (const v1::Job& job : response.jobs()) ids.push_back(job.id());
    return ids;
  }

  // Reads a whole WatchJob stream; returns its final status.
  grpc::Status Watch(const std::string& token, const std::string& id,
                     std::vector<v1::JobEvent>* events) {
    v1::WatchJobRequest request;
    request.set_id(id);
    request.set_follow(false);
    auto context = Ctx(token);
    auto reader = jobs_->WatchJob(context.get(), request);
    v1::JobEvent event;
    while (reader->Read(&event)) events->push_back(event);
    return reader->Finish();
  }

  // Reads a whole DownloadArtifact stream into `data`.
  grpc::Status Download(const std::string& token, const std::string& job_id,
                        const std::string& name, int64_t offset, std::string* data,
                        std::vector<v1::DataChunk>* chunks = nullptr) {
    v1::DownloadArtifactRequest request;
    request.set_job_id(job_id);
    request.set_name(name);
    request.set_offset(offset);
    auto context = Ctx(token);
    auto reader = jobs_->DownloadArtifact(context.get(), request);
    v1::DataChunk chunk;
    while (reader->Read(&chunk)) {
      data->append(chunk.data());
      if (chunks != nullptr) {
        chunk.clear_data();
        chunks->push_back(chunk);
      }
    }
    return reader->Finish();
  }

  grpc::Status Upload(const std::string& token, const std::string& name, const std::string& data,
                      const std::string& sha256, v1::File* file) {
    auto context = Ctx(token);
    auto writer = files_->UploadFile(context.get(), file);
    v1::UploadFileRequest header;
    header.mutable_header()->set_name(name);
    header.mutable_header()->set_size_bytes(static_cast<int64_t>(data.size()));
    header.mutable_header()->set_sha256(sha256);
    writer->Write(header);
    v1::UploadFileRequest chunk;
    chunk.set_data(data);
    writer->Write(chunk);
    writer->WritesDone();
    return writer->Finish();
  }

  std::string RegisterWorker() {
    v1::RegisterWorkerRequest request;
    request.set_name("w1");
    request.set_host("127.0.0.1");
    request.set_device_kind("cpu");
    request.set_memory_bytes(int64_t{16} << 30);
    v1::RegisterWorkerResponse response;
    grpc::Status status = workers_->RegisterWorker(Ctx(worker_).get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    worker_credential_ = response.credential();
    return response.worker_id();
  }

  // A worker call's context: the worker token and the registration's credential.
  std::unique_ptr<grpc::ClientContext> WorkerCtx(
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto context = Ctx(worker_, timeout);
    context->AddMetadata("diablo-worker-credential", worker_credential_);
    return context;
  }

  fs::path dir_;
  std::unique_ptr<SchedulerServer> server_;
  std::string user_a_, user_a2_, user_b_, worker_, worker_credential_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::FileService::Stub> files_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
  std::unique_ptr<v1::FleetService::Stub> fleet_;
  std::unique_ptr<v1::SystemService::Stub> system_;
};

TEST_F(HandlersTest, CallsWithoutAValidTokenAreUnauthenticated) {
  Start();
  for (const std::string& token : {std::string(), std::string("dbl_not_a_real_token")}) {
    SCOPED_TRACE(token.empty() ? "no token" : "unknown token");
    v1::ListJobsResponse list;
    grpc::Status status = jobs_->ListJobs(Ctx(token).get(), v1::ListJobsRequest(), &list);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
    v1::Job job;
    EXPECT_EQ(Create(token, ValidRequest(), &job).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    std::vector<v1::JobEvent> events;
    EXPECT_EQ(Watch(token, "j-any", &events).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    v1::File file;
    EXPECT_EQ(Upload(token, "x.jsonl", kDataset, kDatasetSha256, &file).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    v1::RegisterWorkerResponse registered;
    EXPECT_EQ(workers_->RegisterWorker(Ctx(token).get(), v1::RegisterWorkerRequest(), &registered)
                  .error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    v1::ListWorkersResponse fleet;
    EXPECT_EQ(fleet_->ListWorkers(Ctx(token).get(), v1::ListWorkersRequest(), &fleet).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_EQ(ListIds(user_a_).size(), 0u) << "nothing was created by the refused calls";

  // The version needs no token (health checks and `diablo-ctl version`).
  v1::GetVersionResponse version;
  grpc::Status got = system_->GetVersion(Ctx("").get(), v1::GetVersionRequest(), &version);
  ASSERT_TRUE(got.ok()) << got.error_message();
  EXPECT_FALSE(version.version().empty());
}

TEST_F(HandlersTest, EachRoleIsRefusedTheOtherRolesApi) {
  Start();
  v1::RegisterWorkerResponse registered;
  grpc::Status status =
      workers_->RegisterWorker(Ctx(user_a_).get(), v1::RegisterWorkerRequest(), &registered);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("worker API"));
  v1::LeaseJobResponse lease;
  EXPECT_EQ(workers_->LeaseJob(Ctx(user_a_).get(), v1::LeaseJobRequest(), &lease).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::ReportEventsResponse reported;
  EXPECT_EQ(
      workers_->ReportEvents(Ctx(user_a_).get(), v1::ReportEventsRequest(), &reported).error_code(),
      grpc::StatusCode::PERMISSION_DENIED);
  v1::CompleteAttemptResponse completed;
  EXPECT_EQ(workers_->CompleteAttempt(Ctx(user_a_).get(), v1::CompleteAttemptRequest(), &completed)
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  v1::Job job;
  EXPECT_EQ(Create(worker_, ValidRequest(), &job).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::ListJobsResponse list;
  EXPECT_EQ(jobs_->ListJobs(Ctx(worker_).get(), v1::ListJobsRequest(), &list).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::File file;
  EXPECT_EQ(Upload(worker_, "x.jsonl", kDataset, kDatasetSha256, &file).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  // The fleet view is open to any valid token.
  v1::ListWorkersResponse fleet;
  EXPECT_TRUE(fleet_->ListWorkers(Ctx(user_a_).get(), v1::ListWorkersRequest(), &fleet).ok());
  EXPECT_TRUE(fleet_->ListWorkers(Ctx(worker_).get(), v1::ListWorkersRequest(), &fleet).ok());
}

TEST_F(HandlersTest, AnotherTenantsJobIsNotFound) {
  Start();
  const v1::Job job = MustCreate(user_a_);
  ASSERT_FALSE(job.id().empty());

  grpc::Status got = Get(user_b_, job.id());
  EXPECT_EQ(got.error_code(), grpc::StatusCode::NOT_FOUND) << got.error_message();
  v1::CancelJobRequest cancel;
  cancel.set_id(job.id());
  v1::Job cancelled;
  EXPECT_EQ(jobs_->CancelJob(Ctx(user_b_).get(), cancel, &cancelled).error_code(),
            grpc::StatusCode::NOT_FOUND);
  std::vector<v1::JobEvent> events;
  EXPECT_EQ(Watch(user_b_, job.id(), &events).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(events.empty()) << "no event of another tenant's job is sent";
  v1::ListArtifactsRequest artifacts_request;
  artifacts_request.set_job_id(job.id());
  v1::ListArtifactsResponse artifacts;
  EXPECT_EQ(jobs_->ListArtifacts(Ctx(user_b_).get(), artifacts_request, &artifacts).error_code(),
            grpc::StatusCode::NOT_FOUND);
  std::string data;
  EXPECT_EQ(Download(user_b_, job.id(), "adapter/adapter_model.safetensors", 0, &data).error_code(),
            grpc::StatusCode::NOT_FOUND);

  EXPECT_TRUE(ListIds(user_b_).empty()) << "B lists only its own jobs";
  EXPECT_EQ(ListIds(user_a_), std::vector<std::string>{job.id()});
  EXPECT_EQ(ListIds(user_a2_), std::vector<std::string>{job.id()})
      << "every token of the tenant sees the tenant's jobs";
  v1::Job still;
  ASSERT_TRUE(Get(user_a_, job.id(), &still).ok());
  EXPECT_EQ(still.state(), v1::JOB_STATE_QUEUED) << "B's cancel did not touch A's job";
  events.clear();
  ASSERT_TRUE(Watch(user_a_, job.id(), &events).ok());
  EXPECT_FALSE(events.empty()) << "the owner sees the job's events";
}

TEST_F(HandlersTest, CreateJobWithTheSameIdempotencyKeyReturnsTheSameJob) {
  Start();
  v1::CreateJobRequest request = ValidRequest();
  request.set_idempotency_key("submit-7");
  v1::Job first, again, other_tenant;
  ASSERT_TRUE(Create(user_a_, request, &first).ok());
  ASSERT_TRUE(Create(user_a_, request, &again).ok());
  EXPECT_EQ(first.id(), again.id());
  EXPECT_EQ(ListIds(user_a_).size(), 1u) << "a retried submit creates no second job";

  ASSERT_TRUE(Create(user_b_, request, &other_tenant).ok());
  EXPECT_NE(other_tenant.id(), first.id()) << "keys are per tenant; B must not get A's job";
  EXPECT_EQ(ListIds(user_b_), std::vector<std::string>{other_tenant.id()});
}

TEST_F(HandlersTest, AnInvalidSpecIsInvalidArgumentNamingTheField) {
  Start();
  struct Case {
    const char* field;
    std::function<void(v1::CreateJobRequest&)> spoil;
  };
  const std::vector<Case> cases = {
      {"optim.lr", [](v1::CreateJobRequest& r) { r.mutable_spec()->mutable_optim()->set_lr(-1); }},
      {"spec.data.train",
       [](v1::CreateJobRequest& r) { r.mutable_spec()->mutable_data()->set_train("data.jsonl"); }},
      {"nodes", [](v1::CreateJobRequest& r) { r.set_nodes(-1); }},
      {"spec", [](v1::CreateJobRequest& r) { r.clear_spec(); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    v1::CreateJobRequest request = ValidRequest();
    c.spoil(request);
    v1::Job job;
    grpc::Status status = Create(user_a_, request, &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.field));
  }
  EXPECT_TRUE(ListIds(user_a_).empty()) << "nothing is written for a refused submit";
}

TEST_F(HandlersTest, LeaseJobReturnsWithinTheCallersDeadlineWhenThereIsNoWork) {
  Start();
  const std::string worker_id = RegisterWorker();
  ASSERT_FALSE(worker_id.empty());
  v1::LeaseJobRequest request;
  request.set_worker_id(worker_id);
  request.set_wait_ms(60000);  // far longer than the caller will wait
  const auto deadline = std::chrono::milliseconds(1500);
  const auto start = Clock::now();
  v1::LeaseJobResponse response;
  grpc::Status status = workers_->LeaseJob(WorkerCtx(deadline).get(), request, &response);
  const auto elapsed = Clock::now() - start;
  EXPECT_TRUE(status.ok()) << "an empty answer, not DEADLINE_EXCEEDED: " << status.error_message();
  EXPECT_FALSE(response.has_lease());
  EXPECT_LT(elapsed, deadline);
}

TEST_F(HandlersTest, ALongPollWakesWhenAJobArrives) {
  Start();
  const std::string worker_id = RegisterWorker();
  v1::LeaseJobRequest request;
  request.set_worker_id(worker_id);
  request.set_wait_ms(20000);
  auto polled = std::async(std::launch::async, [&] {
    v1::LeaseJobResponse response;
    grpc::Status status =
        workers_->LeaseJob(WorkerCtx(std::chrono::seconds(30)).get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto submitted = Clock::now();
  const v1::Job job = MustCreate(user_a_);
  ASSERT_EQ(polled.wait_for(std::chrono::seconds(25)), std::future_status::ready);
  EXPECT_LT(Clock::now() - submitted, std::chrono::seconds(10))
      << "the poll answered when the job was placed, not at its end";
  v1::LeaseJobResponse response = polled.get();
  ASSERT_TRUE(response.has_lease());
  EXPECT_EQ(response.lease().job_id(), job.id());
}

TEST_F(HandlersTest, TheRateLimiterAnswersResourceExhaustedPerToken) {
  AuthOptions auth;
  auth.requests_per_second = 0.01;  // no refill within the test
  auth.burst = 3;
  Start(auth);
  for (int i = 0; i < 3; ++i) {
    grpc::Status status = Get(user_a_, "j-none");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << "call " << i;
  }
  grpc::Status limited = Get(user_a_, "j-none");
  EXPECT_EQ(limited.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << limited.error_message();
  EXPECT_THAT(limited.error_message(), HasSubstr("rate limit"));
  EXPECT_EQ(Get(user_b_, "j-none").error_code(), grpc::StatusCode::NOT_FOUND)
      << "another token has its own bucket";
}

TEST_F(HandlersTest, UploadsAreCheckedAndBelongToTheirTenant) {
  Start();
  v1::File bad;
  grpc::Status refused = Upload(user_a_, "train.jsonl", kDataset, std::string(64, 'f'), &bad);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::DATA_LOSS) << refused.error_message();
  v1::ListFilesResponse listed;
  ASSERT_TRUE(files_->ListFiles(Ctx(user_a_).get(), v1::ListFilesRequest(), &listed).ok());
  EXPECT_EQ(listed.files_size(), 0) << "a mismatching upload keeps nothing";

  v1::File file;
  grpc::Status uploaded = Upload(user_a_, "train.jsonl", kDataset, kDatasetSha256, &file);
  ASSERT_TRUE(uploaded.ok()) << uploaded.error_message();
  EXPECT_EQ(file.sha256(), kDatasetSha256);
  EXPECT_EQ(file.size_bytes(), static_cast<int64_t>(std::string(kDataset).size()));

  v1::FindFileRequest find;
  find.set_sha256(kDatasetSha256);
  v1::File found;
  EXPECT_TRUE(files_->FindFile(Ctx(user_a_).get(), find, &found).ok());
  EXPECT_EQ(found.id(), file.id());
  EXPECT_EQ(files_->FindFile(Ctx(user_b_).get(), find, &found).error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::DeleteFileRequest remove;
  remove.set_id(file.id());
  v1::DeleteFileResponse removed;
  EXPECT_EQ(files_->DeleteFile(Ctx(user_b_).get(), remove, &removed).error_code(),
            grpc::StatusCode::NOT_FOUND);

  v1::CreateJobRequest request = ValidRequest();
  request.mutable_spec()->mutable_data()->set_train("upload://" + file.id());
  v1::Job job;
  grpc::Status theirs = Create(user_b_, request, &job);
  EXPECT_EQ(theirs.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << theirs.error_message();
  EXPECT_THAT(theirs.error_message(), HasSubstr("no uploaded file"));
  grpc::Status mine = Create(user_a_, request, &job);
  EXPECT_TRUE(mine.ok()) << mine.error_message();
  EXPECT_EQ(files_->DeleteFile(Ctx(user_a_).get(), remove, &removed).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION)
      << "a file a queued job reads cannot be deleted";
}

TEST_F(HandlersTest, AWorkerRunsAJobAndItsOwnerDownloadsTheArtifact) {
  Start();
  const std::string worker_id = RegisterWorker();
  const v1::Job job = MustCreate(user_a_);
  v1::LeaseJobRequest lease_request;
  lease_request.set_worker_id(worker_id);
  lease_request.set_wait_ms(5000);
  v1::LeaseJobResponse leased;
  ASSERT_TRUE(workers_->LeaseJob(WorkerCtx().get(), lease_request, &leased).ok());
  ASSERT_TRUE(leased.has_lease());
  const v1::Lease& lease = leased.lease();
  EXPECT_EQ(lease.job_id(), job.id());

  v1::ReportEventsRequest report;
  report.set_fence(lease.fence());
  report.add_reports()->set_event_json(R"({"event":"started","total_steps":10})");
  v1::ReportEventsResponse reported;
  ASSERT_TRUE(workers_->ReportEvents(WorkerCtx().get(), report, &reported).ok());
  EXPECT_FALSE(reported.stop());
  v1::Job running;
  ASSERT_TRUE(Get(user_a_, job.id(), &running).ok());
  EXPECT_EQ(running.state(), v1::JOB_STATE_RUNNING);
  report.set_fence(lease.fence() + 1000);
  EXPECT_EQ(workers_->ReportEvents(WorkerCtx().get(), report, &reported).error_code(),
            grpc::StatusCode::PERMISSION_DENIED)
      << "a report under a fence this worker does not hold is refused";

  // The agent uploads the adapter to the service's storage, then completes.
  const std::string content = BigArtifact();
  const std::string name = "adapter/adapter_model.safetensors";
  const std::string key = lease.output_prefix() + "/output/" + name;
  auto storage = OpenFileStore(dir_ / "data" / "storage");
  ASSERT_TRUE(storage.ok()) << storage.status();
  ASSERT_TRUE((*storage)->PutBytes(key, content).ok());
  v1::CompleteAttemptRequest complete;
  complete.set_fence(lease.fence());
  complete.set_succeeded(true);
  v1::UploadedArtifact* artifact = complete.add_artifacts();
  artifact->set_name(name);
  artifact->set_key(key);
  artifact->set_size_bytes(static_cast<int64_t>(content.size()));
  artifact->set_sha256(kBigArtifactSha256);
  v1::CompleteAttemptResponse completed;
  grpc::Status done = workers_->CompleteAttempt(WorkerCtx().get(), complete, &completed);
  ASSERT_TRUE(done.ok()) << done.error_message();

  v1::Job finished;
  ASSERT_TRUE(Get(user_a_, job.id(), &finished).ok());
  EXPECT_EQ(finished.state(), v1::JOB_STATE_SUCCEEDED) << finished.reason();
  v1::ListArtifactsRequest list_request;
  list_request.set_job_id(job.id());
  v1::ListArtifactsResponse artifacts;
  ASSERT_TRUE(jobs_->ListArtifacts(Ctx(user_a_).get(), list_request, &artifacts).ok());
  ASSERT_EQ(artifacts.artifacts_size(), 1);
  EXPECT_EQ(artifacts.artifacts(0).name(), name);
  EXPECT_EQ(artifacts.artifacts(0).sha256(), kBigArtifactSha256);

  std::string data;
  std::vector<v1::DataChunk> chunks;
  grpc::Status downloaded = Download(user_a_, job.id(), name, 0, &data, &chunks);
  ASSERT_TRUE(downloaded.ok()) << downloaded.error_message();
  EXPECT_TRUE(data == content) << "the download is byte for byte what was stored";
  ASSERT_EQ(chunks.size(), 3u) << "1 MiB chunks";
  EXPECT_EQ(chunks[0].artifact().sha256(), kBigArtifactSha256);
  EXPECT_EQ(chunks[0].artifact().size_bytes(), static_cast<int64_t>(content.size()));
  EXPECT_FALSE(chunks[0].last());
  EXPECT_TRUE(chunks[2].last());
  EXPECT_EQ(chunks[2].offset(), int64_t{2} << 20);

  std::string tail;
  const int64_t resume_at = (int64_t{3} << 20) / 2;
  ASSERT_TRUE(Download(user_a_, job.id(), name, resume_at, &tail).ok());
  EXPECT_TRUE(tail == content.substr(static_cast<size_t>(resume_at))) << "offset resumes";
  std::string past_end;
  EXPECT_EQ(Download(user_a_, job.id(), name, static_cast<int64_t>(content.size()) + 1, &past_end)
                .error_code(),
            grpc::StatusCode::OUT_OF_RANGE);

  std::string stolen;
  EXPECT_EQ(Download(user_b_, job.id(), name, 0, &stolen).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(stolen.empty());

  std::vector<v1::JobEvent> events;
  ASSERT_TRUE(Watch(user_a_, job.id(), &events).ok());
  ASSERT_FALSE(events.empty());
  ASSERT_TRUE(events.back().has_state());
  EXPECT_EQ(events.back().state().to(), v1::JOB_STATE_SUCCEEDED);
}

}  // namespace
}  // namespace diablo::server
