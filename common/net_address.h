// Parsing of "host:port" addresses given on command lines and in configs, so
// that a typo is reported with the offending text before any socket is opened.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace diablo {

struct HostPort {
  std::string host;  // "127.0.0.1", "[::1]", "scheduler.internal", "0.0.0.0"
  uint16_t port = 0;

  // "host:port" in the form gRPC expects (IPv6 hosts keep their brackets).
  std::string ToString() const;
};

enum class PortZero { kRejected, kAllowed };

// Parses "host:port", "[v6]:port" or ":port" (meaning all interfaces).
// `what` names the flag or field in the error message, e.g. "--listen".
// Port 0 ("pick a free port") makes sense only for listening: kAllowed.
// Errors: INVALID_ARGUMENT naming the text and the expected form.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view text, absl::string_view what,
                                       PortZero port_zero = PortZero::kRejected);

}  // namespace diablo
