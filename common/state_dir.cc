#include "common/state_dir.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace diablo {
namespace {

// The variable's value when it is an absolute path; relative values are
// ignored, as the XDG base directory specification asks.
const char* AbsoluteFromEnv(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] == '/' ? value : nullptr;
}

}  // namespace

absl::StatusOr<std::string> DefaultStateDir(const std::string& leaf) {
  std::filesystem::path base;
  if (const char* state = AbsoluteFromEnv("XDG_STATE_HOME")) {
    base = state;
  } else if (const char* home = AbsoluteFromEnv("HOME")) {
    base = std::filesystem::path(home) / ".local" / "state";
  } else {
    return absl::FailedPreconditionError(
        "neither XDG_STATE_HOME nor HOME is an absolute path, so there is no default state "
        "directory");
  }
  return (base / "diablo" / leaf).lexically_normal().string();
}

}  // namespace diablo
