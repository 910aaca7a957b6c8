// Which inputs a job may name besides its tenant's own uploads: object URIs
// under prefixes, and local paths under roots, that the operator grants to
// that tenant (none by default).  Nothing under the service's own storage or
// data directory is ever an input, however it is spelt.  The scheduler
// checks every input at submit; the worker agent checks the resolved input
// again before it reads (CheckResolved).
//
// The grants file (diablo-scheduler --input-grants) is JSON:
//   {"tenants": {"ml-team": {"object_prefixes": ["s3://datasets/ml-team"],
//                            "local_roots": ["/mnt/shared/ml-team"]}}}
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace diablo {

class InputPolicy {
 public:
  InputPolicy() = default;  // nothing granted: uploads only

  // INVALID_ARGUMENT naming the file and the entry when it is malformed.
  static absl::StatusOr<InputPolicy> Parse(std::string_view json, std::string_view source);
  static absl::StatusOr<InputPolicy> Load(const std::filesystem::path& file);

  void Grant(const std::string& tenant, std::vector<std::string> object_prefixes,
             std::vector<std::string> local_roots);
  // Never an input for anyone: the service's storage URI (file:// or s3://)
  // and its data directory.
  void Protect(std::string_view uri_or_path);

  // An s3:// URI `field` names; PERMISSION_DENIED naming the field and rule.
  absl::Status CheckObject(std::string_view tenant, std::string_view field,
                           std::string_view uri) const;
  // A local path (file:// already stripped) `field` names: the path with
  // symlinks and ".." resolved, or PERMISSION_DENIED naming field and rule.
  absl::StatusOr<std::string> CheckLocal(std::string_view tenant, std::string_view field,
                                         std::string_view path) const;

  // The worker's second look at an input its lease names: the spelling, and
  // that the object URI or path lies outside everything Protect()ed (the
  // grants are the scheduler's to check; the worker knows what it protects).
  absl::Status CheckNotProtected(std::string_view field, std::string_view uri_or_path) const;

 private:
  struct Grants {
    std::vector<std::string> object_prefixes;
    std::vector<std::filesystem::path> local_roots;  // resolved
  };
  std::map<std::string, Grants, std::less<>> tenants_;
  std::vector<std::string> protected_objects_;
  std::vector<std::filesystem::path> protected_paths_;
};

// Spellings no input may use, whoever granted what: percent-encoding, ".",
// ".." or empty segments, backslashes, control characters.
// PERMISSION_DENIED naming `field` and the rule.
absl::Status CheckInputSpelling(std::string_view field, std::string_view value);

// Where the service keeps uploaded files: kUploadKeyPrefix + <id>, the only
// storage keys a lease may name as inputs.
inline constexpr std::string_view kUploadKeyPrefix = "files/";
// PERMISSION_DENIED unless `key` is kUploadKeyPrefix + one segment.
absl::Status CheckUploadKey(std::string_view field, std::string_view key);

// Whether `path` is `root` or inside it (both resolved, compared by segment).
bool IsWithin(const std::filesystem::path& path, const std::filesystem::path& root);

// The same for object URIs: "s3://b/p" holds "s3://b/p" and "s3://b/p/x",
// not "s3://b/px".
bool IsUnderPrefix(std::string_view uri, std::string_view prefix);

}  // namespace diablo
