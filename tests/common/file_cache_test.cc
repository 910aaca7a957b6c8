// The byte-bounded file cache (the worker's input cache): it never holds
// more than its bound, evicts the least recently used file first, never a
// pinned one (an attempt on the node is reading it), checks checksums,
// fetches a name once for concurrent callers, and picks up after a restart.
#include "common/file_cache.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/sha256.h"

namespace diablo {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int64_t kKiB = 1024;

class FileCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("diablo-file-cache-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::shared_ptr<FileCache> Open(int64_t max_bytes) {
    auto cache = FileCache::Open(dir_, max_bytes);
    EXPECT_TRUE(cache.ok()) << cache.status();
    return cache.ok() ? *cache : nullptr;
  }

  // A source of `bytes` bytes of `fill`, counting its fetches.
  FileCache::Source Bytes(int64_t bytes, char fill = 'x') {
    return FileCache::Source{[bytes]() -> absl::StatusOr<int64_t> { return bytes; },
                             [this, bytes, fill](const fs::path& target) {
                               ++fetches_;
                               std::ofstream(target, std::ios::binary)
                                   << std::string(static_cast<size_t>(bytes), fill);
                               return absl::OkStatus();
                             }};
  }

  std::optional<FileCache::Pin> MustGet(FileCache& cache, const std::string& name, int64_t bytes) {
    auto pin = cache.Get(name, "", Bytes(bytes));
    EXPECT_TRUE(pin.ok()) << pin.status();
    if (!pin.ok()) return std::nullopt;
    return std::optional<FileCache::Pin>(std::move(*pin));
  }

  bool OnDisk(const std::string& name) const { return fs::exists(dir_ / name); }

  fs::path dir_;
  std::atomic<int> fetches_{0};
};

TEST_F(FileCacheTest, AHitIsServedFromDiskWithoutFetchingAgain) {
  auto cache = Open(100 * kKiB);
  { auto pin = MustGet(*cache, "sha-a/train.jsonl", 10 * kKiB); }
  auto again = MustGet(*cache, "sha-a/train.jsonl", 10 * kKiB);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(fetches_, 1);
  EXPECT_EQ(fs::file_size(again->path()), static_cast<uintmax_t>(10 * kKiB));
  EXPECT_EQ(again->path(), dir_ / "sha-a/train.jsonl");
}

TEST_F(FileCacheTest, TheLeastRecentlyUsedFileGoesFirstAndTheBoundHolds) {
  auto cache = Open(30 * kKiB);
  { auto a = MustGet(*cache, "a/f", 10 * kKiB); }
  { auto b = MustGet(*cache, "b/f", 10 * kKiB); }
  { auto c = MustGet(*cache, "c/f", 10 * kKiB); }
  { auto a = MustGet(*cache, "a/f", 10 * kKiB); }  // a is used again: b is now the oldest
  { auto d = MustGet(*cache, "d/f", 10 * kKiB); }
  EXPECT_TRUE(OnDisk("a/f"));
  EXPECT_FALSE(OnDisk("b/f")) << "the least recently used file is evicted";
  EXPECT_FALSE(OnDisk("b")) << "and its empty folder";
  EXPECT_TRUE(OnDisk("c/f"));
  EXPECT_TRUE(OnDisk("d/f"));
  EXPECT_LE(cache->used_bytes(), 30 * kKiB);
}

TEST_F(FileCacheTest, AFileInUseIsNeverEvicted) {
  auto cache = Open(30 * kKiB);
  auto in_use = MustGet(*cache, "old/model.gguf", 10 * kKiB);  // the oldest, pinned
  ASSERT_TRUE(in_use.has_value());
  { auto b = MustGet(*cache, "b/f", 10 * kKiB); }
  { auto c = MustGet(*cache, "c/f", 10 * kKiB); }
  { auto d = MustGet(*cache, "d/f", 10 * kKiB); }
  EXPECT_TRUE(OnDisk("old/model.gguf")) << "an attempt is reading it";
  EXPECT_FALSE(OnDisk("b/f"));
  // Something that fits only by evicting the pinned file does not fit.
  auto big = cache->Get("big/f", "", Bytes(25 * kKiB));
  ASSERT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted) << big.status();
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("in use"));
  EXPECT_TRUE(OnDisk("old/model.gguf"));
  EXPECT_TRUE(OnDisk("c/f")) << "a refusal evicts nothing on the way";
  EXPECT_EQ(fetches_, 4) << "nor fetches anything";
  // Once the attempt is done, the same request fits.
  in_use.reset();
  EXPECT_TRUE(cache->Get("big/f", "", Bytes(25 * kKiB)).ok());
  EXPECT_FALSE(OnDisk("old/model.gguf"));
  EXPECT_LE(cache->used_bytes(), 30 * kKiB);
}

TEST_F(FileCacheTest, AFileLargerThanTheCacheIsRefusedNotFetched) {
  auto cache = Open(10 * kKiB);
  auto huge = cache->Get("huge/f", "", Bytes(11 * kKiB));
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(fetches_, 0);
}

TEST_F(FileCacheTest, EmptyFilesStillCountSoTheyCannotPileUp) {
  auto cache = Open(10 * FileCache::kMinFileBytes);
  for (int i = 0; i < 100; ++i) (void)MustGet(*cache, "e" + std::to_string(i) + "/f", 0);
  int left = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir_))
    left += entry.is_regular_file() ? 1 : 0;
  EXPECT_EQ(left, 10);
}

TEST_F(FileCacheTest, ContentThatDoesNotMatchItsChecksumIsNotKept) {
  auto cache = Open(100 * kKiB);
  const std::string expected = Sha256Hex(std::string(kKiB, 'x'));
  auto bad = cache->Get("s/f", expected, Bytes(kKiB, 'y'));
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(OnDisk("s/f"));
  EXPECT_EQ(cache->used_bytes(), 0);
  auto good = cache->Get("s/f", expected, Bytes(kKiB, 'x'));
  EXPECT_TRUE(good.ok()) << good.status();
}

TEST_F(FileCacheTest, AFailedFetchLeavesNothingAndReservesNothing) {
  auto cache = Open(10 * kKiB);
  FileCache::Source failing{[]() -> absl::StatusOr<int64_t> { return 8 * kKiB; },
                            [](const fs::path& target) {
                              std::ofstream(target) << "partial";
                              return absl::UnavailableError("storage went away");
                            }};
  EXPECT_EQ(cache->Get("f/f", "", failing).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(cache->used_bytes(), 0);
  EXPECT_TRUE(cache->Get("g/f", "", Bytes(8 * kKiB)).ok()) << "no room leaked";
  for (const auto& entry : fs::recursive_directory_iterator(dir_))
    if (entry.is_regular_file()) {
      EXPECT_EQ(entry.path(), dir_ / "g/f") << "a partial file left";
    }
}

TEST_F(FileCacheTest, NamesThatWouldLeaveTheCacheAreRefused) {
  auto cache = Open(100 * kKiB);
  for (const char* name :
       {"../escape", "/abs/path", "a/../../b", "a//b", "", ".partial/x", "a\\b"}) {
    SCOPED_TRACE(name);
    EXPECT_FALSE(cache->Get(name, "", Bytes(1)).ok());
  }
  EXPECT_EQ(fetches_, 0);
}

TEST_F(FileCacheTest, ConcurrentGetsOfOneFileFetchItOnce) {
  auto cache = Open(100 * kKiB);
  FileCache::Source slow{[]() -> absl::StatusOr<int64_t> { return kKiB; },
                         [this](const fs::path& target) {
                           ++fetches_;
                           std::this_thread::sleep_for(std::chrono::milliseconds(100));
                           std::ofstream(target) << std::string(kKiB, 'z');
                           return absl::OkStatus();
                         }};
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] {
      auto pin = cache->Get("same/f", "", slow);
      if (pin.ok() && fs::file_size(pin->path()) == static_cast<uintmax_t>(kKiB)) ++ok;
    });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok, 8);
  EXPECT_EQ(fetches_, 1);
}

TEST_F(FileCacheTest, ARestartedCacheKeepsItsFilesAndTheirOrder) {
  {
    auto cache = Open(100 * kKiB);
    { auto a = MustGet(*cache, "a/f", 10 * kKiB); }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    { auto b = MustGet(*cache, "b/f", 10 * kKiB); }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    { auto a = MustGet(*cache, "a/f", 10 * kKiB); }  // a is the most recent again
  }
  fs::create_directories(dir_ / ".partial");
  std::ofstream(dir_ / ".partial" / "123-0") << "an interrupted fetch";
  // A smaller bound after the restart: one of the two must go, the older.
  auto cache = Open(15 * kKiB);
  EXPECT_TRUE(OnDisk("a/f"));
  EXPECT_FALSE(OnDisk("b/f"));
  EXPECT_FALSE(OnDisk(".partial/123-0")) << "leftovers of a crash are cleared";
  EXPECT_EQ(cache->used_bytes(), 10 * kKiB);
  (void)MustGet(*cache, "a/f", 10 * kKiB);
  EXPECT_EQ(fetches_, 2) << "the adopted file is a hit";
}

TEST_F(FileCacheTest, AFileDeletedBehindTheCachesBackIsFetchedAgain) {
  auto cache = Open(100 * kKiB);
  { auto a = MustGet(*cache, "a/f", kKiB); }
  fs::remove(dir_ / "a/f");
  auto again = MustGet(*cache, "a/f", kKiB);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(fetches_, 2);
  EXPECT_TRUE(fs::exists(again->path()));
}

TEST_F(FileCacheTest, SharedGivesOneInstancePerDirectoryWhileItIsHeld) {
  auto first = FileCache::Shared(dir_, 10 * kKiB);
  ASSERT_TRUE(first.ok());
  auto second = FileCache::Shared(dir_ / ".", 20 * kKiB);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(first->get(), second->get()) << "two attempts must share the accounting";
  EXPECT_EQ((*second)->max_bytes(), 10 * kKiB);
}

}  // namespace
}  // namespace diablo
