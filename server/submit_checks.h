// What the scheduler keeps between submits so that checking a job costs a
// bounded amount whatever tenants send: the copies of uploaded and s3://
// models it reads (a byte-bounded cache, common/file_cache.h, under
// <data-dir>/cache/objects), the models' tokenizers (server/model_tokenizers.h),
// the dataset checks that passed, and slots bounding how many datasets are
// read at once.  The bounds are diablo-scheduler flags (SubmitCheckOptions).
//
// The server opens one with its flags and hands it to every CreateJob's
// validation (ValidationContext::checks); tools and tests without a server
// get the one For() finds or makes with the defaults.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/file_cache.h"
#include "common/lru_cache.h"
#include "server/model_tokenizers.h"

namespace diablo::server {

struct SubmitCheckOptions {
  // A dataset up to this size is checked line by line in full; of a larger
  // one only the first this many bytes (whole lines), and the trainer checks
  // the rest when it loads the file.  0: datasets are not read at submit.
  int64_t dataset_check_bytes = int64_t{64} << 20;
  // Datasets read at once, all tenants together, and by one tenant (so that
  // one tenant's parallel submits cannot hold every slot).  A submit waits
  // up to dataset_check_wait for a slot, then is UNAVAILABLE (retry later).
  int concurrent_dataset_checks = 2;
  int concurrent_dataset_checks_per_tenant = 1;
  absl::Duration dataset_check_wait = absl::Seconds(10);
  // Models whose tokenizer and chat template stay loaded.
  int tokenizer_cache_entries = 4;
  // Disk for the copies of uploaded and s3:// models the scheduler reads at
  // submit (their shape and tokenizer); the least recently used go first,
  // never one a running check reads.  A model larger than this is not
  // copied: its memory and dataset tokens are then not checked at submit.
  int64_t object_cache_bytes = int64_t{20} << 30;
};

class SubmitChecks {
 public:
  // Opens the checks' state under `cache_dir` (the object copies go to
  // cache_dir/objects) and makes it what For(cache_dir) returns while the
  // result is held.
  static absl::StatusOr<std::shared_ptr<SubmitChecks>> Open(const std::filesystem::path& cache_dir,
                                                            const SubmitCheckOptions& options);
  // The state opened for `cache_dir` and still held, else a new one with
  // the default options.
  static std::shared_ptr<SubmitChecks> For(const std::filesystem::path& cache_dir);

  const SubmitCheckOptions& options() const { return options_; }
  // The copies of models, opened on first use when For made this state (so
  // that a submit refused before it reads anything writes nothing).
  absl::StatusOr<FileCache*> objects();
  ModelTokenizers& tokenizers() { return tokenizers_; }

  // Permission to read one dataset; gives its slot back when destroyed.
  class Slot {
   public:
    Slot(Slot&& other) noexcept : owner_(other.owner_), tenant_(std::move(other.tenant_)) {
      other.owner_ = nullptr;
    }
    Slot& operator=(Slot&&) = delete;
    ~Slot();

   private:
    friend class SubmitChecks;
    Slot(SubmitChecks* owner, std::string tenant) : owner_(owner), tenant_(std::move(tenant)) {}
    SubmitChecks* owner_;
    std::string tenant_;
  };
  // Waits up to options().dataset_check_wait for a slot free both overall
  // and within `tenant`'s share; UNAVAILABLE when none frees up.
  absl::StatusOr<Slot> AcquireDatasetSlot(const std::string& tenant);

  // Dataset checks that passed, by a key naming the file's content and
  // every setting that changes the outcome (at most kPassedEntries kept).
  bool Passed(const std::string& key);
  void RecordPassed(const std::string& key);
  static constexpr size_t kPassedEntries = 1024;

  SubmitChecks(const std::filesystem::path& cache_dir, const SubmitCheckOptions& options);

 private:
  const std::filesystem::path cache_dir_;
  const SubmitCheckOptions options_;
  ModelTokenizers tokenizers_;
  std::mutex mu_;
  std::shared_ptr<FileCache> objects_;  // guarded by mu_
  std::condition_variable freed_;
  int busy_slots_ = 0;  // guarded by mu_
  // Slots held per tenant; a tenant leaves the map with its last slot.
  std::map<std::string, int> busy_by_tenant_;  // guarded by mu_
  LruCache<std::string, bool> passed_;         // guarded by mu_
};

// A line for the operator's log (stderr): what a submit could not do, with
// the scheduler's own paths and storage errors, which users never see.
void NoteForOperator(const std::string& text);

}  // namespace diablo::server
