// The byte-bounded file cache: adoption, room-making, fetching, pins.
#include "common/file_cache.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/safe_name.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace diablo {
namespace {

namespace fs = std::filesystem;

// Where fetches write until they are complete and checked; never an entry.
constexpr std::string_view kPartialDir = ".partial";

int64_t Charge(int64_t size) { return std::max(size, FileCache::kMinFileBytes); }

std::string MiB(int64_t bytes) {
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

bool IsRegularFile(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(fs::symlink_status(path, ec));
}

}  // namespace

FileCache::Pin::~Pin() {
  if (cache_ != nullptr) cache_->Unpin(name_);
}

absl::StatusOr<std::shared_ptr<FileCache>> FileCache::Open(const fs::path& dir, int64_t max_bytes) {
  if (max_bytes <= 0)
    return absl::InvalidArgumentError(
        absl::StrCat("the cache ", dir.string(), " needs a positive size, got ", max_bytes));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create the cache ", dir.string(), ": ", ec.message()));
  auto cache = std::make_shared<FileCache>(dir, max_bytes);
  std::lock_guard<std::mutex> lock(cache->mu_);
  cache->Adopt();
  return cache;
}

absl::StatusOr<std::shared_ptr<FileCache>> FileCache::Shared(const fs::path& dir,
                                                             int64_t max_bytes) {
  static std::mutex mu;
  // By directory; bounded by the directories in use (expired ones go).
  static std::map<std::string, std::weak_ptr<FileCache>> open;
  std::lock_guard<std::mutex> lock(mu);
  for (auto it = open.begin(); it != open.end();)
    it = it->second.expired() ? open.erase(it) : std::next(it);
  std::string key = fs::absolute(dir).lexically_normal().string();
  while (key.size() > 1 && key.back() == '/') key.pop_back();  // "d/." is "d/" is "d"
  if (std::shared_ptr<FileCache> existing = open[key].lock()) return existing;
  ASSIGN_OR_RETURN(std::shared_ptr<FileCache> cache, Open(dir, max_bytes));
  open[key] = cache;
  return cache;
}

void FileCache::Adopt() {
  std::error_code ec;
  fs::remove_all(dir_ / kPartialDir, ec);  // fetches a crash interrupted
  struct Found {
    fs::file_time_type modified;
    std::string name;
    int64_t size;
  };
  std::vector<Found> found;
  for (auto it = fs::recursive_directory_iterator(dir_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!IsRegularFile(it->path())) continue;  // directories, and symlinks never followed
    std::string name = it->path().lexically_relative(dir_).generic_string();
    if (name.starts_with(kPartialDir) || !ValidateRelativePath(name, "cache entry").ok()) continue;
    std::error_code stat;
    const auto size = static_cast<int64_t>(it->file_size(stat));
    const fs::file_time_type modified = it->last_write_time(stat);
    if (!stat) found.push_back({modified, std::move(name), size});
  }
  std::sort(found.begin(), found.end(),
            [](const Found& a, const Found& b) { return a.modified < b.modified; });
  for (const Found& file : found) {  // the most recently modified ends up the most recent
    entries_.Put(file.name, Entry{Charge(file.size), 0, false});
    used_bytes_ += Charge(file.size);
  }
  MakeRoom(0);  // a smaller bound than last time
}

bool FileCache::MakeRoom(int64_t incoming) {
  if (incoming > max_bytes_ - pinned_bytes_) return false;  // evicting cannot help: fail early
  while (used_bytes_ + incoming > max_bytes_) {
    auto victim = entries_.PopOldestIf(
        [](const std::string&, const Entry& entry) { return entry.pins == 0 && !entry.fetching; });
    if (!victim) return false;
    used_bytes_ -= victim->second.charge;
    Delete(victim->first);
  }
  return true;
}

void FileCache::Delete(const std::string& name) {
  std::error_code ec;
  fs::remove(dir_ / name, ec);
  // Then the folders it leaves empty (<sha256>/), up to the cache itself.
  for (fs::path folder = fs::path(name).parent_path(); !folder.empty();
       folder = folder.parent_path())
    if (!fs::remove(dir_ / folder, ec)) break;  // not empty
}

FileCache::Pin FileCache::PinLocked(const std::string& name, Entry& entry) {
  if (entry.pins++ == 0) pinned_bytes_ += entry.charge;
  // The modification time is the order Adopt() restores after a restart.
  std::error_code ec;
  fs::last_write_time(dir_ / name, fs::file_time_type::clock::now(), ec);
  return Pin(shared_from_this(), name, dir_ / name);
}

void FileCache::Unpin(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  Entry* entry = entries_.Get(name);  // a release is a use: the file was just read
  if (entry != nullptr && --entry->pins == 0) pinned_bytes_ -= entry->charge;
}

int64_t FileCache::used_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_bytes_;
}

absl::StatusOr<FileCache::Pin> FileCache::Get(const std::string& name, const std::string& sha256,
                                              const Source& source) {
  RETURN_IF_ERROR(ValidateRelativePath(name, "cache entry"));
  if (name.starts_with(kPartialDir))
    return absl::InvalidArgumentError(absl::StrCat("cache entry \"", name, "\": a reserved name"));
  std::unique_lock<std::mutex> lock(mu_);
  std::optional<int64_t> size;
  while (true) {
    if (Entry* entry = entries_.Get(name)) {
      if (entry->fetching) {  // by another Get: wait for it rather than fetch twice
        fetched_.wait(lock);
        continue;
      }
      if (IsRegularFile(dir_ / name)) return PinLocked(name, *entry);
      if (entry->pins > 0)
        return absl::DataLossError(absl::StrCat("the cached file ", (dir_ / name).string(),
                                                " was deleted while in use; retry"));
      used_bytes_ -= entry->charge;  // deleted behind the cache's back: fetch it again
      entries_.Erase(name);
    }
    if (size) break;
    // Asking may take a round trip to storage: not under the lock.  Then look
    // again, as another Get may have fetched the file meanwhile.
    lock.unlock();
    absl::StatusOr<int64_t> asked = source.size();
    lock.lock();
    if (!asked.ok()) return asked.status();
    size = std::max<int64_t>(*asked, 0);
  }
  const int64_t charge = Charge(*size);
  if (!MakeRoom(charge))
    return absl::ResourceExhaustedError(
        absl::StrCat(name, " (", MiB(*size), ") does not fit in the cache ", dir_.string(), " (",
                     MiB(max_bytes_), ", of which files in use hold ", MiB(pinned_bytes_), ")"));
  entries_.Put(name, Entry{charge, 1, true});
  used_bytes_ += charge;
  pinned_bytes_ += charge;

  lock.unlock();
  const absl::Status fetched = Fetch(name, sha256, source);
  lock.lock();
  Entry* entry = entries_.Get(name);  // still there: nothing evicts a pinned entry
  if (entry == nullptr) return absl::InternalError(absl::StrCat("cache entry ", name, " vanished"));
  if (!fetched.ok()) {
    used_bytes_ -= entry->charge;
    pinned_bytes_ -= entry->charge;
    entries_.Erase(name);
    fetched_.notify_all();
    return fetched;
  }
  entry->fetching = false;
  // Charge what arrived, which the store's announced size need not match.
  std::error_code ec;
  const auto actual = static_cast<int64_t>(fs::file_size(dir_ / name, ec));
  if (!ec && Charge(actual) != entry->charge) {
    const int64_t delta = Charge(actual) - entry->charge;
    entry->charge += delta;
    used_bytes_ += delta;
    pinned_bytes_ += delta;
    MakeRoom(0);
  }
  fetched_.notify_all();
  return Pin(shared_from_this(), name, dir_ / name);
}

absl::Status FileCache::Fetch(const std::string& name, const std::string& sha256,
                              const Source& source) {
  static std::atomic<uint64_t> counter{0};
  const fs::path partial = dir_ / kPartialDir / absl::StrCat(::getpid(), "-", counter.fetch_add(1));
  std::error_code ec;
  fs::create_directories(partial.parent_path(), ec);
  absl::Status status = source.fetch(partial);
  if (status.ok() && !sha256.empty()) {
    absl::StatusOr<std::string> digest = Sha256OfFile(partial);
    if (!digest.ok())
      status = digest.status();
    else if (*digest != sha256)
      status = absl::DataLossError(
          absl::StrCat(name, ": the fetched content has SHA-256 ", *digest, ", expected ", sha256));
  }
  if (status.ok()) {
    const fs::path target = dir_ / name;
    fs::create_directories(target.parent_path(), ec);
    fs::rename(partial, target, ec);
    if (ec)
      status = absl::InternalError(
          absl::StrCat("cannot move a fetched file to ", target.string(), ": ", ec.message()));
  }
  if (!status.ok()) fs::remove(partial, ec);
  return status;
}

}  // namespace diablo
