// The embedded object store: objects are files under a root directory
// (file:///var/lib/diablo/storage).  Writes go to a temporary file in the same
// directory, are fsync'd and renamed over the key, so they are atomic.
#pragma once

#include <filesystem>
#include <memory>

#include "common/object_store.h"

namespace diablo {

// Creates the root when it does not exist.
absl::StatusOr<std::unique_ptr<ObjectStore>> OpenFileStore(const std::filesystem::path& root);

}  // namespace diablo
