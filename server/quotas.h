// Per-tenant resource limits: what a tenant may hold in uploaded files, how
// many uploads it may have in progress, and how many of its jobs may queue
// and run at once.  The defaults are diablo-scheduler flags; the quotas file
// (--quotas) overrides them tenant by tenant:
//
//   {"tenants": {"ml-team":  {"upload_bytes": 5497558138880, "files": 50000,
//                             "concurrent_uploads": 8, "running_jobs": 16,
//                             "queued_jobs": 5000},
//                "interns":  {"running_jobs": 1}}}
//
// Every limit is a whole number and 0 means "no limit"; a key a tenant's
// entry leaves out keeps the flag's default.  Over a limit, a call is
// RESOURCE_EXHAUSTED saying which limit, the usage and what to do, except
// running_jobs, which leaves the tenant's further jobs queued until one of
// its running jobs ends.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace diablo::server {

// One tenant's limits; 0 means no limit.
struct TenantLimits {
  int64_t upload_bytes = int64_t{1} << 40;  // bytes of uploaded files held (1 TiB)
  int64_t files = 10000;                    // uploaded files held
  int64_t concurrent_uploads = 4;           // uploads in progress
  int64_t running_jobs = 0;                 // jobs assigned or running
  int64_t queued_jobs = 1000;               // jobs queued or assigned
};

// The quotas file: per-tenant overrides of the defaults.
class QuotaOverrides {
 public:
  QuotaOverrides() = default;  // no overrides: the defaults for everyone

  // INVALID_ARGUMENT naming `source` and the key when the JSON is malformed:
  // not an object, an unknown or repeated key, a tenant name that no token
  // could carry, a value that is not a whole number in range.
  static absl::StatusOr<QuotaOverrides> Parse(std::string_view json, std::string_view source);
  static absl::StatusOr<QuotaOverrides> Load(const std::filesystem::path& file);

  // `defaults` with what the file says for `tenant` applied.
  TenantLimits Apply(std::string_view tenant, TenantLimits defaults) const;

  // For tests and embedders: `tenant`'s entry, as the file would give it.
  struct Entry {
    std::optional<int64_t> upload_bytes, files, concurrent_uploads, running_jobs, queued_jobs;
  };
  void Set(const std::string& tenant, Entry entry) { tenants_[tenant] = entry; }
  bool empty() const { return tenants_.empty(); }

 private:
  std::map<std::string, Entry, std::less<>> tenants_;
};

// Uploads in progress, per tenant (memory only: an upload does not survive
// a restart, and neither does its slot).  A Slot is held for the whole
// upload and gives its place back when it goes, on every exit path.
class UploadTracker {
 public:
  struct InFlight {
    int64_t uploads = 0;
    int64_t bytes = 0;  // what their headers declared
  };

  class Slot {
   public:
    Slot(Slot&& other) noexcept
        : tracker_(other.tracker_), tenant_(std::move(other.tenant_)), bytes_(other.bytes_) {
      other.tracker_ = nullptr;
    }
    Slot& operator=(Slot&&) = delete;
    Slot(const Slot&) = delete;
    ~Slot();

   private:
    friend class UploadTracker;
    Slot(UploadTracker* tracker, std::string tenant, int64_t bytes)
        : tracker_(tracker), tenant_(std::move(tenant)), bytes_(bytes) {}
    UploadTracker* tracker_;
    std::string tenant_;
    int64_t bytes_;
  };

  // What `tenant` has in progress now.
  InFlight Of(const std::string& tenant) const;
  // A slot for one more upload of `bytes`.  The caller has checked the
  // limits against Of() under a lock that every Acquire of the same tenant
  // also takes (the scheduler's), so that check and acquisition are one step.
  Slot Acquire(const std::string& tenant, int64_t bytes);

 private:
  void Release(const std::string& tenant, int64_t bytes);

  mutable std::mutex mu_;
  // Only tenants with an upload in progress have an entry, so the map is
  // bounded by the uploads in progress, which the limits bound.
  std::map<std::string, InFlight> in_flight_;
};

// "1.5 GiB", for messages about quotas.
std::string HumanBytes(int64_t bytes);

}  // namespace diablo::server
