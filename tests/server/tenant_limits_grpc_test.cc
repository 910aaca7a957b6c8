// Per-tenant limits as a client meets them: a real SchedulerServer on a
// loopback port, called through the generated stubs.  An upload over a
// quota is refused at its header (before any data is sent), failed and
// cancelled uploads give their slot back, another tenant never notices, and
// a flood of random tokens over many connections does not reach the token
// store while a valid token from another address still works.
#include <gmock/gmock.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

#include "common/sha256.h"
#include "diablo/v1/file.grpc.pb.h"
#include "diablo/v1/job.grpc.pb.h"
#include "server/auth.h"
#include "server/db.h"
#include "server/scheduler_server.h"

namespace diablo {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

class TenantLimitsGrpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("diablo-limits-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto db = server::Db::Open((dir_ / "scheduler.db").string());
    ASSERT_TRUE(db.ok()) << db.status();
    std::string id;
    auto a = server::CreateToken(**db, "tenant-a", server::Role::kUser, "a", &id);
    auto b = server::CreateToken(**db, "tenant-b", server::Role::kUser, "b", &id);
    ASSERT_TRUE(a.ok() && b.ok());
    user_a_ = *a;
    user_b_ = *b;
    options_.listen_address = "127.0.0.1:0";
    options_.data_dir = dir_.string();
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

  void Start() {
    auto server = SchedulerServer::BuildAndStart(options_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    files_ = v1::FileService::NewStub(NewChannel("127.0.0.1"));
  }
  std::shared_ptr<grpc::Channel> NewChannel(const std::string& host) {
    // Channel arguments that differ make gRPC open a new connection (a new
    // source port) instead of sharing the subchannel of an earlier channel.
    grpc::ChannelArguments args;
    args.SetInt("diablo.test.connection", ++connections_);
    return grpc::CreateCustomChannel(host + ":" + std::to_string(server_->port()),
                                     grpc::InsecureChannelCredentials(), args);
  }
  static std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->AddMetadata("authorization", "Bearer " + token);
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return context;
  }

  // A whole upload of `data`, declared as `declared` bytes (the data's size
  // when negative) with `sha256` (the data's when empty).
  grpc::Status Upload(const std::string& token, const std::string& data, int64_t declared = -1,
                      std::string sha256 = "", v1::File* file = nullptr) {
    auto context = Ctx(token);
    v1::File ignored;
    auto writer = files_->UploadFile(context.get(), file != nullptr ? file : &ignored);
    v1::UploadFileRequest header;
    header.mutable_header()->set_name("train.jsonl");
    header.mutable_header()->set_size_bytes(declared < 0 ? static_cast<int64_t>(data.size())
                                                         : declared);
    header.mutable_header()->set_sha256(sha256.empty() ? Sha256Hex(data) : sha256);
    if (writer->Write(header)) {
      v1::UploadFileRequest chunk;
      chunk.set_data(data);
      writer->Write(chunk);
    }
    writer->WritesDone();
    return writer->Finish();
  }

  // Calls `call` until it answers `code` or five seconds pass; its last answer.
  static grpc::Status Eventually(grpc::StatusCode code, const std::function<grpc::Status()>& call) {
    grpc::Status status;
    for (auto start = Clock::now(); Clock::now() - start < std::chrono::seconds(5);) {
      status = call();
      if (status.error_code() == code) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return status;
  }

  fs::path dir_;
  SchedulerOptions options_;
  std::string user_a_, user_b_;
  std::unique_ptr<SchedulerServer> server_;
  std::unique_ptr<v1::FileService::Stub> files_;
  int connections_ = 0;
};

TEST_F(TenantLimitsGrpcTest, AnUploadOverTheQuotaIsRefusedBeforeAnyDataIsSent) {
  options_.scheduler.tenant_limits.upload_bytes = 1000;
  Start();
  ASSERT_TRUE(Upload(user_a_, std::string(600, 'x')).ok());
  // Only the header: a server that waited for the data would answer at the
  // deadline, not at once.
  auto context = Ctx(user_a_);
  v1::File file;
  auto writer = files_->UploadFile(context.get(), &file);
  v1::UploadFileRequest header;
  header.mutable_header()->set_name("big.jsonl");
  header.mutable_header()->set_size_bytes(401);
  header.mutable_header()->set_sha256(std::string(64, 'a'));
  ASSERT_TRUE(writer->Write(header));
  const auto sent = Clock::now();
  const grpc::Status refused = writer->Finish();
  EXPECT_LT(Clock::now() - sent, std::chrono::seconds(5));
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_THAT(refused.error_message(), HasSubstr("upload quota"));
  EXPECT_THAT(refused.error_message(), HasSubstr("holds 600 bytes"));
  EXPECT_THAT(refused.error_message(), HasSubstr("may hold 1000 bytes"));
  EXPECT_THAT(refused.error_message(), HasSubstr("diablo-ctl files rm"));
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_ / "uploads", ec))
    ADD_FAILURE() << "scratch file left: " << entry.path();

  EXPECT_TRUE(Upload(user_b_, std::string(1000, 'y')).ok()) << "tenant b has its own quota";
}

TEST_F(TenantLimitsGrpcTest, DeletingAFileMakesRoomAgain) {
  options_.scheduler.tenant_limits.files = 1;
  Start();
  v1::File first;
  ASSERT_TRUE(Upload(user_a_, "one\n", -1, "", &first).ok());
  const grpc::Status refused = Upload(user_a_, "two\n");
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("file quota"));
  v1::DeleteFileRequest remove;
  remove.set_id(first.id());
  v1::DeleteFileResponse removed;
  ASSERT_TRUE(files_->DeleteFile(Ctx(user_a_).get(), remove, &removed).ok());
  EXPECT_TRUE(Upload(user_a_, "two\n").ok());
}

TEST_F(TenantLimitsGrpcTest, FailedAndCancelledUploadsGiveTheirSlotBack) {
  options_.scheduler.tenant_limits.concurrent_uploads = 1;
  Start();
  // A failed upload (its checksum does not match) frees the slot before its
  // status reaches the client.
  for (int i = 0; i < 3; ++i) {
    const grpc::Status bad = Upload(user_a_, "data\n", -1, std::string(64, 'f'));
    ASSERT_EQ(bad.error_code(), grpc::StatusCode::DATA_LOSS) << bad.error_message();
  }
  const grpc::Status short_upload = Upload(user_a_, "data\n", 100);
  ASSERT_EQ(short_upload.error_code(), grpc::StatusCode::DATA_LOSS);
  ASSERT_TRUE(Upload(user_a_, "data\n").ok()) << "no slot leaked by the failures";

  // An upload left open holds the slot: the tenant's next one is refused,
  // another tenant's is not.
  auto held = Ctx(user_a_);
  v1::File unused;
  auto writer = files_->UploadFile(held.get(), &unused);
  v1::UploadFileRequest header;
  header.mutable_header()->set_name("slow.jsonl");
  header.mutable_header()->set_size_bytes(1 << 20);
  header.mutable_header()->set_sha256(std::string(64, 'a'));
  ASSERT_TRUE(writer->Write(header));
  const grpc::Status busy =
      Eventually(grpc::StatusCode::RESOURCE_EXHAUSTED, [&] { return Upload(user_a_, "x\n"); });
  ASSERT_EQ(busy.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << busy.error_message();
  EXPECT_THAT(busy.error_message(), HasSubstr("1 uploads in progress"));
  EXPECT_TRUE(Upload(user_b_, "b\n").ok()) << "tenant b is not held up by a's upload";

  // The client gives up: the slot comes back.
  held->TryCancel();
  (void)writer->Finish();
  const grpc::Status after =
      Eventually(grpc::StatusCode::OK, [&] { return Upload(user_a_, "after cancel\n"); });
  EXPECT_TRUE(after.ok()) << after.error_message();
}

TEST_F(TenantLimitsGrpcTest, ATokenFloodOverManyConnectionsNeverReachesTheStore) {
  options_.auth.failure_burst = 5;
  options_.auth.failures_per_second = 0.001;
  Start();
  // Verified before the flood: answered from memory during it.
  v1::ListFilesResponse listed;
  ASSERT_TRUE(files_->ListFiles(Ctx(user_a_).get(), v1::ListFilesRequest(), &listed).ok());
  const int64_t before = server_->authenticator().store_lookups();

  int refused = 0;
  for (int i = 0; i < 40; ++i) {
    // Each call on a new connection, so a new source port, with a new token.
    auto stub = v1::FileService::NewStub(NewChannel("127.0.0.1"));
    const grpc::Status status = stub->ListFiles(Ctx("dbl_random_" + std::to_string(i)).get(),
                                                v1::ListFilesRequest(), &listed);
    ASSERT_FALSE(status.ok());
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++refused;
  }
  EXPECT_EQ(refused, 35);
  EXPECT_EQ(server_->authenticator().store_lookups() - before, 5)
      << "the source port must not give a client a new budget";
  EXPECT_TRUE(files_->ListFiles(Ctx(user_a_).get(), v1::ListFilesRequest(), &listed).ok())
      << "a token verified a moment ago still works from the same address";

  // Another address (IPv6 loopback, when this host has it) is unaffected.
  SchedulerOptions dual = options_;
  if (server_ != nullptr) {
    server_->Shutdown(absl::ZeroDuration());
    server_->Wait();
    server_.reset();
  }
  dual.listen_address = "[::]:0";
  auto server = SchedulerServer::BuildAndStart(dual);
  if (!server.ok()) GTEST_SKIP() << "no IPv6 listener here: " << server.status();
  server_ = std::move(*server);
  for (int i = 0; i < 10; ++i) {
    auto stub = v1::FileService::NewStub(NewChannel("127.0.0.1"));
    (void)stub->ListFiles(Ctx("dbl_random_" + std::to_string(i)).get(), v1::ListFilesRequest(),
                          &listed);
  }
  auto v4 = v1::FileService::NewStub(NewChannel("127.0.0.1"));
  ASSERT_EQ(v4->ListFiles(Ctx(user_b_).get(), v1::ListFilesRequest(), &listed).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED)
      << "an uncached token from the flooding address waits out its budget";
  auto v6 = v1::FileService::NewStub(NewChannel("[::1]"));
  const grpc::Status other = v6->ListFiles(Ctx(user_b_).get(), v1::ListFilesRequest(), &listed);
  if (other.error_code() == grpc::StatusCode::UNAVAILABLE)
    GTEST_SKIP() << "no IPv6 loopback here: " << other.error_message();
  EXPECT_TRUE(other.ok()) << "a valid token from another address: " << other.error_message();
}

}  // namespace
}  // namespace diablo
