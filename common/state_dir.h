// Where the service keeps its runtime data when the operator names no
// directory: an absolute per-user state directory, never the working
// directory, so running a binary from a checkout writes nothing into it.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace diablo {

// $XDG_STATE_HOME/diablo/<leaf>, else $HOME/.local/state/diablo/<leaf>.
// FAILED_PRECONDITION when neither variable holds an absolute path (a
// service account without a home): the caller names its flag in the message.
absl::StatusOr<std::string> DefaultStateDir(const std::string& leaf);

}  // namespace diablo
