// StagedDirectory: sibling staging directories and the rename protocol.
#include "formats/staged_directory.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <stdexcept>

namespace diablo::model {
namespace {

namespace fs = std::filesystem;

std::runtime_error SystemError(const std::string& what, const std::string& path) {
  return std::runtime_error("cannot " + what + " " + path + ": " + std::strerror(errno));
}

// fs::path("out/") has an empty filename; the sibling is named after "out".
fs::path Normalised(const std::string& target) {
  fs::path p = fs::path(target).lexically_normal();
  if (p.has_relative_path() && p.filename().empty()) p = p.parent_path();
  return p;
}

// A fresh directory `<parent>/.<name>.<tag>-<random>`, mode 0777 less umask
// (mkdtemp would give 0700, wrong for a model directory others read).
std::string MakeSibling(const fs::path& target, const std::string& tag) {
  fs::path parent = target.parent_path();
  if (parent.empty()) parent = ".";
  std::random_device seed;
  std::mt19937_64 random(seed());
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::string name = "." + target.filename().string() + "." + tag + "-" +
                             std::to_string(::getpid()) + "-" + std::to_string(random() % 1000000);
    const fs::path candidate = parent / name;
    if (::mkdir(candidate.c_str(), 0777) == 0) return candidate.string();
    if (errno != EEXIST) throw SystemError("create the staging directory", candidate.string());
  }
  throw std::runtime_error("cannot find a free staging directory name in " + parent.string());
}

void Fsync(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw SystemError("open directory", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw SystemError("fsync directory", path);
}

}  // namespace

void StagedDirectory::CheckTarget(const std::string& target, bool replace) {
  std::error_code ec;
  const fs::path p = Normalised(target);
  if (p.filename().empty() || p.filename() == "." || p.filename() == "..") {
    throw std::runtime_error(target + ": name the directory to create (e.g. out/merged)");
  }
  const auto status = fs::symlink_status(p, ec);
  if (!fs::exists(status)) {
    // Missing parents are created (as save_pretrained does); one that exists
    // as a file cannot be.
    for (fs::path parent = p.parent_path(); !parent.empty(); parent = parent.parent_path()) {
      if (fs::is_directory(parent, ec)) break;
      if (fs::exists(parent, ec)) {
        throw std::runtime_error(target + ": " + parent.string() + " is not a directory");
      }
      if (parent == parent.parent_path()) break;
    }
    return;
  }
  if (!fs::is_directory(status)) {
    throw std::runtime_error(target + ": exists and is not a directory; choose another --out");
  }
  if (!replace && !fs::is_empty(p, ec)) {
    throw std::runtime_error(target +
                             ": exists and is not empty; choose another --out or pass --force "
                             "to replace it");
  }
}

StagedDirectory::StagedDirectory(std::string target, bool replace)
    : target_(Normalised(target).string()), replace_(replace) {
  CheckTarget(target_, replace_);
  const fs::path parent = fs::path(target_).parent_path();
  std::error_code ec;
  if (!parent.empty() && !fs::create_directories(parent, ec) && ec) {
    throw std::runtime_error("cannot create " + parent.string() + ": " + ec.message());
  }
  staging_ = MakeSibling(fs::path(target_), "partial");
}

StagedDirectory::~StagedDirectory() {
  if (committed_) return;
  std::error_code ignored;
  fs::remove_all(staging_, ignored);
}

void StagedDirectory::Commit() {
  CheckTarget(target_, replace_);  // the target may have changed while we wrote
  Fsync(staging_);
  std::error_code ec;
  std::string aside;
  if (fs::exists(target_, ec) && !fs::is_empty(target_, ec)) {
    // rename(2) replaces only an empty directory: move the old one aside.
    aside = MakeSibling(fs::path(target_), "old");
    if (::rename(target_.c_str(), aside.c_str()) != 0) {
      const auto error = SystemError("move aside the existing", target_);
      fs::remove(aside, ec);
      throw error;
    }
  }
  if (::rename(staging_.c_str(), target_.c_str()) != 0) {
    const auto error = SystemError("rename " + staging_ + " to", target_);
    if (!aside.empty()) ::rename(aside.c_str(), target_.c_str());
    throw error;
  }
  committed_ = true;
  const fs::path parent = fs::path(target_).parent_path();
  Fsync(parent.empty() ? "." : parent.string());
  if (!aside.empty()) fs::remove_all(aside, ec);
}

}  // namespace diablo::model
