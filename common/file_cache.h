// A directory of fetched files kept for reuse, bounded in bytes: when a new
// file would pass the bound, the least recently used files are deleted
// first, never one that is pinned (a job on this machine is reading it).
// The worker agent keeps uploaded inputs here by SHA-256 (work_dir/cache),
// so a node that trains on a stream of different datasets does not fill
// its disk.
//
// Files already in the directory (an earlier run's) are adopted at Open,
// least recently modified first, and a hit sets a file's modification time,
// so the order survives restarts.  One process should own a directory;
// Shared() gives every user in the process the same instance.
//
// Thread-safe.  Concurrent Gets of one name fetch it once: the others wait.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "common/lru_cache.h"

namespace diablo {

class FileCache : public std::enable_shared_from_this<FileCache> {
 public:
  // A file the holder is using: it stays in the cache, and on disk, until
  // every Pin on it is gone.
  class Pin {
   public:
    Pin(Pin&& other) noexcept = default;
    Pin& operator=(Pin&& other) = delete;  // would drop the pin it holds
    ~Pin();
    const std::filesystem::path& path() const { return path_; }

   private:
    friend class FileCache;
    Pin(std::shared_ptr<FileCache> cache, std::string name, std::filesystem::path path)
        : cache_(std::move(cache)), name_(std::move(name)), path_(std::move(path)) {}
    std::shared_ptr<FileCache> cache_;  // null once moved from
    std::string name_;
    std::filesystem::path path_;
  };

  // Where a missing file comes from.  `size` is asked first (to make room
  // before anything is written); `fetch` writes the content to a path the
  // cache chooses.
  struct Source {
    std::function<absl::StatusOr<int64_t>()> size;
    std::function<absl::Status(const std::filesystem::path& target)> fetch;
  };

  // The cache over `dir` (created if missing), holding at most `max_bytes`
  // (each file counts at least kMinFileBytes, so empty files cannot grow
  // it without bound either).
  static absl::StatusOr<std::shared_ptr<FileCache>> Open(const std::filesystem::path& dir,
                                                         int64_t max_bytes);
  // The instance this process has over `dir` while anyone holds it, or a
  // new one (then with `max_bytes`).
  static absl::StatusOr<std::shared_ptr<FileCache>> Shared(const std::filesystem::path& dir,
                                                           int64_t max_bytes);

  // The file `name` (a relative path, common/safe_name.h), fetched from
  // `source` unless present, pinned for the caller.  With a non-empty
  // `sha256` a fetched file must hash to it (DATA_LOSS otherwise; nothing is
  // kept).  RESOURCE_EXHAUSTED when it cannot fit: it is larger than the
  // cache, or the pinned files leave too little room; the caller may then
  // fetch it elsewhere, for its own use only.
  absl::StatusOr<Pin> Get(const std::string& name, const std::string& sha256, const Source& source);

  int64_t used_bytes() const;
  int64_t max_bytes() const { return max_bytes_; }
  const std::filesystem::path& dir() const { return dir_; }

  static constexpr int64_t kMinFileBytes = 4096;

  FileCache(std::filesystem::path dir, int64_t max_bytes)
      : dir_(std::move(dir)), max_bytes_(max_bytes), entries_(kUnboundedCount) {}

 private:
  // Bounded by bytes instead (MakeRoom), so the count is not what limits it.
  static constexpr size_t kUnboundedCount = static_cast<size_t>(-1);

  struct Entry {
    int64_t charge = 0;  // bytes counted against max_bytes_
    int pins = 0;
    bool fetching = false;  // its Get is fetching it; others wait
  };

  // REQUIRES: mu_ held (all of these).
  void Adopt();
  // Deletes unpinned files, least recently used first, until `incoming`
  // more bytes fit; false when the pinned ones leave too little room.
  bool MakeRoom(int64_t incoming);
  void Delete(const std::string& name);
  Pin PinLocked(const std::string& name, Entry& entry);

  absl::Status Fetch(const std::string& name, const std::string& sha256, const Source& source);
  void Unpin(const std::string& name);

  const std::filesystem::path dir_;
  const int64_t max_bytes_;
  mutable std::mutex mu_;
  std::condition_variable fetched_;
  LruCache<std::string, Entry> entries_;  // guarded by mu_
  int64_t used_bytes_ = 0;                // guarded by mu_
  int64_t pinned_bytes_ = 0;              // guarded by mu_; of entries with pins > 0
};

}  // namespace diablo
