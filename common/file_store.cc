// ObjectStore over a local (or mounted) directory.
#include "common/file_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/absl_view.h"
#include "common/status_macros.h"

namespace diablo {
namespace {

namespace fs = std::filesystem;

// A full disk or a failing device is UNAVAILABLE: the same call may work
// once the operator has made room, and callers retry or report it so.
absl::Status ErrnoError(const std::string& what, const fs::path& path) {
  const int error = errno;
  const std::string message = absl::StrCat(what, " ", path.string(), ": ", std::strerror(error));
  if (error == ENOSPC || error == EDQUOT || error == EIO)
    return absl::UnavailableError(absl::StrCat(message, " (storage full or failing; retry later)"));
  return absl::InternalError(message);
}

// fsync of a directory, so that entries created or renamed in it survive a
// power loss.
absl::Status SyncDirectory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("cannot open directory", dir);
  const bool synced = ::fsync(fd) == 0;
  absl::Status status = synced ? absl::OkStatus() : ErrnoError("cannot sync directory", dir);
  ::close(fd);
  return status;
}

// A unique temporary name next to `target` (same directory: rename is atomic).
fs::path TempNameFor(const fs::path& target) {
  static std::atomic<uint64_t> counter{0};
  return target.parent_path() /
         absl::StrCat(".", target.filename().string(), ".tmp.", getpid(), ".", counter++);
}

// Writes `data` (or the content of `source` when non-empty) to a temporary
// file, fsyncs it and renames it to `target`.
absl::Status WriteAtomically(const fs::path& target, std::string_view data,
                             const fs::path* source) {
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  if (ec)
    return absl::InternalError(
        absl::StrCat("cannot create ", target.parent_path().string(), ": ", ec.message()));
  const fs::path temp = TempNameFor(target);
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", temp);
  auto write_all = [fd](const char* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::write(fd, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  };
  bool ok = true;
  if (source != nullptr) {
    std::ifstream in(*source, std::ios::binary);
    if (!in) {
      ::close(fd);
      ::unlink(temp.c_str());
      return absl::NotFoundError(absl::StrCat("cannot open ", source->string()));
    }
    std::string buffer(1 << 20, '\0');
    while (ok && in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      ok = write_all(buffer.data(), static_cast<size_t>(in.gcount()));
    }
    ok = ok && !in.bad();
  } else {
    ok = write_all(data.data(), data.size());
  }
  ok = ok && ::fsync(fd) == 0;
  // errno is read before close() can change it.
  absl::Status status = ok ? absl::OkStatus() : ErrnoError("cannot write", target);
  ::close(fd);
  if (status.ok() && ::rename(temp.c_str(), target.c_str()) != 0)
    status = ErrnoError("cannot write", target);
  if (!status.ok()) {
    ::unlink(temp.c_str());
    return status;
  }
  // The rename is durable only once the directory entry is: without this a
  // power loss can leave the object missing although the call succeeded.
  return SyncDirectory(target.parent_path());
}

class FileStore final : public ObjectStore {
 public:
  explicit FileStore(fs::path root) : root_(std::move(root)) {}

  std::string uri() const override { return "file://" + root_.string(); }

  absl::Status PutFile(std::string_view key, const fs::path& local) override {
    ASSIGN_OR_RETURN(fs::path target, PathOf(key));
    return WriteAtomically(target, {}, &local);
  }
  absl::Status PutBytes(std::string_view key, std::string_view data) override {
    ASSIGN_OR_RETURN(fs::path target, PathOf(key));
    return WriteAtomically(target, data, nullptr);
  }

  absl::Status GetFile(std::string_view key, const fs::path& local) override {
    ASSIGN_OR_RETURN(fs::path source, ExistingPathOf(key));
    return WriteAtomically(local, {}, &source);
  }
  absl::StatusOr<std::string> GetBytes(std::string_view key) override {
    ASSIGN_OR_RETURN(fs::path source, ExistingPathOf(key));
    return ReadRange(key, 0, static_cast<int64_t>(fs::file_size(source)));
  }
  absl::StatusOr<std::string> ReadRange(std::string_view key, int64_t offset,
                                        int64_t length) override {
    ASSIGN_OR_RETURN(fs::path source, ExistingPathOf(key));
    std::ifstream in(source, std::ios::binary);
    if (!in)
      return absl::NotFoundError(absl::StrCat("object ", AbslView(key), " cannot be opened"));
    in.seekg(offset);
    std::string data(static_cast<size_t>(std::max<int64_t>(length, 0)), '\0');
    in.read(data.data(), static_cast<std::streamsize>(data.size()));
    data.resize(static_cast<size_t>(std::max<std::streamsize>(in.gcount(), 0)));
    return data;
  }

  absl::StatusOr<ObjectInfo> Stat(std::string_view key) override {
    ASSIGN_OR_RETURN(fs::path source, ExistingPathOf(key));
    return ObjectInfo{std::string(key), static_cast<int64_t>(fs::file_size(source))};
  }

  absl::StatusOr<std::vector<ObjectInfo>> List(std::string_view prefix) override {
    std::vector<ObjectInfo> objects;
    std::error_code ec;
    if (!fs::exists(root_, ec)) return objects;
    for (auto it = fs::recursive_directory_iterator(root_, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_regular_file()) continue;
      std::string key = fs::relative(it->path(), root_).generic_string();
      if (key.rfind(prefix, 0) != 0) continue;
      // Temporary files of writes in progress are not objects.
      if (it->path().filename().string().rfind('.', 0) == 0 &&
          it->path().filename().string().find(".tmp.") != std::string::npos)
        continue;
      objects.push_back({key, static_cast<int64_t>(it->file_size())});
    }
    if (ec)
      return absl::InternalError(absl::StrCat("cannot list ", root_.string(), ": ", ec.message()));
    std::sort(objects.begin(), objects.end(),
              [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
    return objects;
  }

  absl::Status Delete(std::string_view key) override {
    ASSIGN_OR_RETURN(fs::path target, PathOf(key));
    std::error_code ec;
    fs::remove(target, ec);
    if (ec)
      return absl::InternalError(
          absl::StrCat("cannot delete ", target.string(), ": ", ec.message()));
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<fs::path> PathOf(std::string_view key) const {
    RETURN_IF_ERROR(ValidateObjectKey(key));
    return root_ / fs::path(std::string(key));
  }
  absl::StatusOr<fs::path> ExistingPathOf(std::string_view key) const {
    ASSIGN_OR_RETURN(fs::path path, PathOf(key));
    std::error_code ec;
    if (!fs::is_regular_file(path, ec))
      return absl::NotFoundError(absl::StrCat("object ", AbslView(key), " not found in ", uri()));
    return path;
  }

  fs::path root_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ObjectStore>> OpenFileStore(const fs::path& root) {
  if (!root.is_absolute())
    return absl::InvalidArgumentError(
        absl::StrCat("file storage root must be an absolute path, got ", root.string()));
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec)
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create storage directory ", root.string(), ": ", ec.message()));
  return std::unique_ptr<ObjectStore>(std::make_unique<FileStore>(root));
}

}  // namespace diablo
