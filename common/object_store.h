// Object storage for datasets, models, checkpoints and adapters: one interface,
// two backends chosen by URI — file:///dir (the embedded default: a directory,
// possibly a shared mount) and s3://bucket/prefix (AWS S3 or any S3-compatible
// server).  Keys are relative, '/'-separated names ("jobs/j-1/adapter/x").
// Writes are atomic: a reader sees the previous object or the whole new one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace diablo {

struct ObjectInfo {
  std::string key;
  int64_t size_bytes = 0;
};

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;

  // The URI the store was opened from (file:///dir, s3://bucket/prefix).
  virtual std::string uri() const = 0;

  // Stores the content of a local file, or bytes, under `key`, replacing it.
  virtual absl::Status PutFile(std::string_view key, const std::filesystem::path& local) = 0;
  virtual absl::Status PutBytes(std::string_view key, std::string_view data) = 0;

  // Writes the object into `local` (through a temporary file renamed into
  // place, so a failed download leaves no partial file).  NOT_FOUND when absent.
  virtual absl::Status GetFile(std::string_view key, const std::filesystem::path& local) = 0;
  virtual absl::StatusOr<std::string> GetBytes(std::string_view key) = 0;
  // Up to `length` bytes from `offset` (fewer at the end of the object).
  virtual absl::StatusOr<std::string> ReadRange(std::string_view key, int64_t offset,
                                                int64_t length) = 0;

  // NOT_FOUND when absent.
  virtual absl::StatusOr<ObjectInfo> Stat(std::string_view key) = 0;
  // Every object whose key starts with `prefix`, sorted by key.
  virtual absl::StatusOr<std::vector<ObjectInfo>> List(std::string_view prefix) = 0;
  // Deleting an absent object is not an error.
  virtual absl::Status Delete(std::string_view key) = 0;
};

// Opens the store a URI names.  INVALID_ARGUMENT for an unknown scheme or a
// malformed URI, saying which forms are accepted.
absl::StatusOr<std::unique_ptr<ObjectStore>> OpenObjectStore(std::string_view uri);

// Rejects keys that are empty, absolute, or contain "." / ".." segments or
// empty segments, so no key escapes its store.
absl::Status ValidateObjectKey(std::string_view key);

// Uploads every regular file under `dir` to `prefix` + "/" + its relative path.
absl::Status PutDirectory(ObjectStore& store, std::string_view prefix,
                          const std::filesystem::path& dir);
// Downloads every object under `prefix` + "/" into `dir`, keeping relative paths.
// NOT_FOUND when the prefix holds nothing.
absl::Status GetDirectory(ObjectStore& store, std::string_view prefix,
                          const std::filesystem::path& dir);

}  // namespace diablo

namespace diablo {

// An object URI split into the store it lives in and its key:
// "s3://bucket/a/b.jsonl" → {"s3://bucket", "a/b.jsonl"}.
struct ObjectUri {
  std::string store_uri;
  std::string key;
};
// INVALID_ARGUMENT unless `uri` is s3://bucket/key (file:// URIs are paths,
// used in place, and are not split).
absl::StatusOr<ObjectUri> SplitObjectUri(std::string_view uri);

}  // namespace diablo
