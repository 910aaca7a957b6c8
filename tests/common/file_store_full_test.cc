// The file store on a full disk: a tiny tmpfs mounted in this process's own
// mount namespace (root only; skipped, and reported so, elsewhere).  A write
// that does not fit is UNAVAILABLE, leaves neither the object nor a
// temporary file behind, and the same write succeeds once there is room.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "common/file_store.h"

namespace diablo {
namespace {

namespace fs = std::filesystem;

class FileStoreFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
    // A private mount namespace: the tmpfs is invisible outside this process.
    if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
      GTEST_SKIP() << "no private mount namespace here: " << std::strerror(errno);
    dir_ = fs::temp_directory_path() / ("diablo-full-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    if (mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=256k") != 0)
      GTEST_SKIP() << "cannot mount a tmpfs: " << std::strerror(errno);
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) umount(dir_.c_str());
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  fs::path dir_;
  bool mounted_ = false;
};

TEST_F(FileStoreFullTest, AWriteThatDoesNotFitIsUnavailableAndLeavesNothing) {
  auto store = OpenFileStore(dir_ / "storage");
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->PutBytes("jobs/j-1/small", std::string(64 << 10, 'a')).ok());

  const absl::Status full = (*store)->PutBytes("jobs/j-1/big", std::string(1 << 20, 'b'));
  EXPECT_EQ(full.code(), absl::StatusCode::kUnavailable) << full;
  EXPECT_NE(std::string(full.message()).find("full"), std::string::npos) << full;
  EXPECT_EQ((*store)->Stat("jobs/j-1/big").status().code(), absl::StatusCode::kNotFound);
  for (const auto& entry : fs::recursive_directory_iterator(dir_ / "storage"))
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos)
        << "a temporary file was left: " << entry.path();

  // Room again (the operator deleted something): the same call succeeds and
  // what was stored before is intact.
  ASSERT_TRUE((*store)->Delete("jobs/j-1/small").ok());
  EXPECT_TRUE((*store)->PutBytes("jobs/j-1/big", std::string(160 << 10, 'b')).ok());
  EXPECT_EQ((*store)->GetBytes("jobs/j-1/big")->size(), 160u << 10);
}

}  // namespace
}  // namespace diablo
