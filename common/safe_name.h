// Names that become paths on somebody's disk: upload names, artifact names
// and download targets.  Every side that stores or writes one (the
// scheduler, diablo-ctl, the worker agent) checks it here, whoever sent it;
// client/python/diablo_client applies the same rules.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace diablo {

inline constexpr size_t kMaxNameSegmentBytes = 255;  // one file or folder name
inline constexpr size_t kMaxRelativePathBytes = 1024;

// A relative path of '/'-separated segments ("adapter/adapter_model.safetensors"):
// not empty, not absolute, no empty, "." or ".." segment, no backslash, no
// control character, each segment at most kMaxNameSegmentBytes and the whole
// at most kMaxRelativePathBytes.  INVALID_ARGUMENT names `what` and the rule;
// the name itself is quoted with control characters escaped.
absl::Status ValidateRelativePath(std::string_view name, std::string_view what);

// One segment of such a path: no '/' at all.
absl::Status ValidateFileName(std::string_view name, std::string_view what);

}  // namespace diablo
