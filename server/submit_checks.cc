// The submit checks' shared state: one per cache directory, slots, passes.
#include "server/submit_checks.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace diablo::server {
namespace {

namespace fs = std::filesystem;

std::mutex registry_mu;
// By directory; bounded by the directories in use (expired entries go).
std::map<std::string, std::weak_ptr<SubmitChecks>>& Registry() {
  static auto* registry = new std::map<std::string, std::weak_ptr<SubmitChecks>>();
  return *registry;
}

std::string KeyOf(const fs::path& dir) {
  std::string key = fs::absolute(dir).lexically_normal().string();
  while (key.size() > 1 && key.back() == '/') key.pop_back();
  return key;
}

// REQUIRES: registry_mu held.
std::shared_ptr<SubmitChecks> RegisterLocked(const fs::path& cache_dir,
                                             const SubmitCheckOptions& options) {
  auto checks = std::make_shared<SubmitChecks>(cache_dir, options);
  auto& registry = Registry();
  for (auto it = registry.begin(); it != registry.end();)
    it = it->second.expired() ? registry.erase(it) : std::next(it);
  registry[KeyOf(cache_dir)] = checks;
  return checks;
}

}  // namespace

SubmitChecks::SubmitChecks(const fs::path& cache_dir, const SubmitCheckOptions& options)
    : cache_dir_(cache_dir),
      options_(options),
      tokenizers_(static_cast<size_t>(std::max(options.tokenizer_cache_entries, 1))),
      passed_(kPassedEntries) {}

absl::StatusOr<FileCache*> SubmitChecks::objects() {
  std::lock_guard<std::mutex> lock(mu_);
  if (objects_ == nullptr) {
    ASSIGN_OR_RETURN(objects_,
                     FileCache::Shared(cache_dir_ / "objects", options_.object_cache_bytes));
  }
  return objects_.get();
}

absl::StatusOr<std::shared_ptr<SubmitChecks>> SubmitChecks::Open(
    const fs::path& cache_dir, const SubmitCheckOptions& options) {
  if (options.dataset_check_bytes < 0 || options.concurrent_dataset_checks < 1 ||
      options.tokenizer_cache_entries < 1 || options.object_cache_bytes <= 0)
    return absl::InvalidArgumentError(
        "--dataset-check-bytes must not be negative, and --max-concurrent-dataset-checks, "
        "--tokenizer-cache-entries and --submit-cache-bytes must be positive");
  std::shared_ptr<SubmitChecks> checks;
  {
    std::lock_guard<std::mutex> lock(registry_mu);
    checks = RegisterLocked(cache_dir, options);
  }
  // The server opens the cache at start: it adopts an earlier run's copies
  // and trims them to the bound.
  RETURN_IF_ERROR(checks->objects().status());
  return checks;
}

std::shared_ptr<SubmitChecks> SubmitChecks::For(const fs::path& cache_dir) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto it = Registry().find(KeyOf(cache_dir));
  if (it != Registry().end())
    if (std::shared_ptr<SubmitChecks> held = it->second.lock()) return held;
  return RegisterLocked(cache_dir, SubmitCheckOptions{});
}

SubmitChecks::Slot::~Slot() {
  if (owner_ == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(owner_->mu_);
    --owner_->busy_slots_;
    if (--owner_->busy_by_tenant_[tenant_] <= 0) owner_->busy_by_tenant_.erase(tenant_);
  }
  // Every waiter: the one a freed slot suits may be of another tenant.
  owner_->freed_.notify_all();
}

absl::StatusOr<SubmitChecks::Slot> SubmitChecks::AcquireDatasetSlot(const std::string& tenant) {
  std::unique_lock<std::mutex> lock(mu_);
  const int per_tenant = std::max(1, options_.concurrent_dataset_checks_per_tenant);
  auto held_by_tenant = [&] {
    auto it = busy_by_tenant_.find(tenant);
    return it == busy_by_tenant_.end() ? 0 : it->second;
  };
  const bool freed =
      freed_.wait_for(lock, absl::ToChronoMilliseconds(options_.dataset_check_wait), [&] {
        return busy_slots_ < options_.concurrent_dataset_checks && held_by_tenant() < per_tenant;
      });
  if (!freed) {
    if (held_by_tenant() >= per_tenant)
      return absl::UnavailableError(
          absl::StrCat("this tenant's other submits are being checked (", held_by_tenant(),
                       " at once, the share of one tenant); submit again when they are done"));
    return absl::UnavailableError(
        absl::StrCat("the scheduler is busy checking other submits' datasets (", busy_slots_,
                     " at once, its limit); submit again shortly"));
  }
  ++busy_slots_;
  ++busy_by_tenant_[tenant];
  return Slot(this, tenant);
}

bool SubmitChecks::Passed(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  return passed_.Get(key) != nullptr;
}

void SubmitChecks::RecordPassed(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  passed_.Put(key, true);
}

void NoteForOperator(const std::string& text) {
  std::fprintf(stderr, "diablo-scheduler: submit check: %s\n", text.c_str());
}

}  // namespace diablo::server
