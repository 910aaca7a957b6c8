// The scheduler's store on a full disk: a tiny tmpfs in this process's own
// mount namespace (root only; skipped, and reported so, elsewhere).  A write
// that does not fit is UNAVAILABLE with no SQL in its message, the store
// reports itself unwritable (the health service's NOT_SERVING), nothing
// acknowledged is lost, and once there is room the next tick finds the store
// writable again and work goes on.
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/file_store.h"
#include "server/db.h"
#include "tests/server/scheduler_test_util.h"

namespace diablo::server {
namespace {

namespace fs = std::filesystem;

class StoreFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
    if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
      GTEST_SKIP() << "no private mount namespace here: " << std::strerror(errno);
    dir_ = fs::temp_directory_path() / ("diablo-store-full-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    if (mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=2m") != 0)
      GTEST_SKIP() << "cannot mount a tmpfs: " << std::strerror(errno);
    mounted_ = true;
    auto db = Db::Open((dir_ / "scheduler.db").string());
    ASSERT_TRUE(db.ok()) << db.status();
    auto storage = OpenFileStore(dir_ / "storage");
    ASSERT_TRUE(storage.ok()) << storage.status();
    SchedulerConfig config;
    config.storage_uri = "file://" + (dir_ / "storage").string();
    auto scheduler = Scheduler::Open(std::move(*db), std::move(*storage), config);
    ASSERT_TRUE(scheduler.ok()) << scheduler.status();
    scheduler_ = std::move(*scheduler);
  }
  void TearDown() override {
    scheduler_.reset();
    if (mounted_) umount2(dir_.c_str(), MNT_DETACH);
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  absl::StatusOr<v1::Job> Submit(int i) {
    v1::CreateJobRequest request;
    request.set_name("job-" + std::to_string(i));
    request.mutable_spec()->set_model("/models/m.gguf");
    ValidatedJob job;
    job.spec_json = R"({"model":"/models/m.gguf"})";
    // Large enough that a few of them need new database pages.
    job.config_json = R"({"model":"/models/m.gguf","pad":")" + std::string(16 << 10, 'x') + "\"}";
    return scheduler_->CreateJob("a", request, job);
  }

  // Fills the filesystem until a write fails; returns the filler's path.
  fs::path FillTheDisk() {
    const fs::path filler = dir_ / "filler";
    std::ofstream out(filler, std::ios::binary);
    const std::string block(4096, 'f');
    while (out.write(block.data(), block.size())) out.flush();
    return filler;
  }

  fs::path dir_;
  bool mounted_ = false;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(StoreFullTest, AFullDiskIsUnavailableLosesNothingAndRecovers) {
  std::vector<std::string> acknowledged;
  for (int i = 0; i < 3; ++i) {
    auto job = Submit(i);
    ASSERT_TRUE(job.ok()) << job.status();
    acknowledged.push_back(job->id());
  }
  const fs::path filler = FillTheDisk();

  absl::Status refused;
  for (int i = 3; i < 40 && refused.ok(); ++i) {
    auto job = Submit(i);
    if (job.ok())
      acknowledged.push_back(job->id());
    else
      refused = job.status();
  }
  ASSERT_FALSE(refused.ok()) << "the disk never filled up";
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  const std::string message(refused.message());
  for (const char* sql : {"INSERT", "SELECT", "UPDATE", "jobs (", "VALUES"})
    EXPECT_EQ(message.find(sql), std::string::npos) << "SQL reached the caller: " << message;
  EXPECT_FALSE(scheduler_->store_writable());
  EXPECT_FALSE(scheduler_->Tick().ok()) << "the probe cannot write either";

  fs::remove(filler);  // the operator makes room
  ASSERT_TRUE(scheduler_->Tick().ok());
  EXPECT_TRUE(scheduler_->store_writable());
  auto after = Submit(99);
  ASSERT_TRUE(after.ok()) << after.status();
  acknowledged.push_back(after->id());

  for (const std::string& id : acknowledged)
    EXPECT_TRUE(scheduler_->GetJob("a", id).ok()) << "acknowledged job " << id << " was lost";
  scheduler_.reset();  // closes the store; then check the file itself
  auto db = Db::Open((dir_ / "scheduler.db").string());
  ASSERT_TRUE(db.ok()) << db.status();
  auto check = (*db)->Prepare("PRAGMA integrity_check");
  ASSERT_TRUE(check.ok());
  ASSERT_TRUE(check->Step().ok());
  EXPECT_EQ(check->Text(0), "ok");
}

}  // namespace
}  // namespace diablo::server
