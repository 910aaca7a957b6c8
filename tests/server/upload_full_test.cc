// An upload that meets a full disk: the scheduler's data directory on a tiny
// tmpfs in this process's own mount namespace (root only; skipped, and
// reported so, elsewhere).  The upload is UNAVAILABLE at once, not after the
// whole stream; nothing is stored or listed and no scratch file is left.
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>

#include "diablo/v1/file.grpc.pb.h"
#include "server/auth.h"
#include "server/db.h"
#include "server/scheduler_server.h"

namespace diablo {
namespace {

namespace fs = std::filesystem;

TEST(UploadFull, AnUploadThatDoesNotFitStopsAtOnceAndLeavesNothing) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    GTEST_SKIP() << "no private mount namespace here: " << std::strerror(errno);
  const fs::path dir =
      fs::temp_directory_path() / ("diablo-upload-full-" + std::to_string(getpid()));
  fs::create_directories(dir);
  if (mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=4m") != 0)
    GTEST_SKIP() << "cannot mount a tmpfs: " << std::strerror(errno);
  std::string token;
  {
    auto db = server::Db::Open((dir / "scheduler.db").string());
    ASSERT_TRUE(db.ok()) << db.status();
    std::string id;
    auto created = server::CreateToken(**db, "tenant-a", server::Role::kUser, "a", &id);
    ASSERT_TRUE(created.ok());
    token = *created;
  }
  SchedulerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.data_dir = dir.string();
  auto server = SchedulerServer::BuildAndStart(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto files = v1::FileService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*server)->port()), grpc::InsecureChannelCredentials()));

  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer " + token);
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::File stored;
  auto writer = files->UploadFile(&context, &stored);
  const int64_t declared = int64_t{64} << 20;  // 16 times the disk
  v1::UploadFileRequest header;
  header.mutable_header()->set_name("big.jsonl");
  header.mutable_header()->set_size_bytes(declared);
  header.mutable_header()->set_sha256(std::string(64, 'a'));
  ASSERT_TRUE(writer->Write(header));
  v1::UploadFileRequest chunk;
  chunk.set_data(std::string(1 << 20, 'x'));
  int sent = 0;
  while (sent < 64 && writer->Write(chunk)) ++sent;
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_LT(sent, 64) << "the scheduler read the whole stream before refusing it";

  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir / "uploads", ec))
    ADD_FAILURE() << "scratch file left: " << entry.path();
  grpc::ClientContext list_context;
  list_context.AddMetadata("authorization", "Bearer " + token);
  v1::ListFilesResponse listed;
  ASSERT_TRUE(files->ListFiles(&list_context, v1::ListFilesRequest(), &listed).ok());
  EXPECT_EQ(listed.files_size(), 0);

  (*server)->Shutdown(absl::ZeroDuration());
  (*server)->Wait();
  server->reset();
  umount2(dir.c_str(), MNT_DETACH);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace diablo
