// A directory that appears complete or not at all: it is built under a
// hidden temporary sibling name and renamed into place by Commit(), so a
// failure (or a crash) never leaves a half-written model where users look.
#pragma once

#include <string>

namespace diablo::model {

class StagedDirectory {
 public:
  // Throws std::runtime_error when `target` cannot be (re)placed: it exists
  // and is not a directory, is a non-empty directory and `replace` is false,
  // or a parent of it is a file.  Callers check before expensive work; the
  // constructor checks again.
  static void CheckTarget(const std::string& target, bool replace);

  // Creates missing parents of `target`, and the staging directory
  // `.<name>.partial-<random>` beside it.
  StagedDirectory(std::string target, bool replace);
  // Removes the staging directory and what it holds unless committed.
  ~StagedDirectory();
  StagedDirectory(const StagedDirectory&) = delete;
  StagedDirectory& operator=(const StagedDirectory&) = delete;

  // Where to write the contents.
  const std::string& path() const { return staging_; }

  // Renames the staging directory to `target` (fsyncing both levels).  An
  // existing target, with `replace`, is moved aside first and removed once
  // the new directory is in place; if the swap fails it is moved back.
  void Commit();

 private:
  std::string target_, staging_;
  bool replace_;
  bool committed_ = false;
};

}  // namespace diablo::model
