// ParseHostPort: the one place addresses from users are checked.
#include "common/net_address.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace diablo {
namespace {

absl::Status Invalid(absl::string_view what, absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": '", text, "' is not a valid address (", why,
                   "); expected host:port, [ipv6]:port or :port, e.g. 127.0.0.1:50051"));
}

}  // namespace

std::string HostPort::ToString() const { return absl::StrCat(host, ":", port); }

absl::StatusOr<HostPort> ParseHostPort(absl::string_view text, absl::string_view what,
                                       PortZero port_zero) {
  if (text.empty()) return Invalid(what, text, "it is empty");
  size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos) return Invalid(what, text, "no port");
  absl::string_view host = text.substr(0, colon);
  absl::string_view port_text = text.substr(colon + 1);
  if (host.find(':') != absl::string_view::npos &&
      !(host.size() > 2 && host.front() == '[' && host.back() == ']')) {
    return Invalid(what, text, "an IPv6 host must be in brackets");
  }
  if (host.find_first_of(" \t/") != absl::string_view::npos) {
    return Invalid(what, text, "the host contains a space or slash");
  }
  uint32_t port = 0;
  const uint32_t lowest = port_zero == PortZero::kAllowed ? 0 : 1;
  if (!absl::SimpleAtoi(port_text, &port) || port < lowest || port > 65535) {
    return Invalid(what, text,
                   absl::StrCat("the port must be a number from ", lowest, " to 65535"));
  }
  HostPort out;
  out.host = host.empty() ? "0.0.0.0" : std::string(host);
  out.port = static_cast<uint16_t>(port);
  return out;
}

}  // namespace diablo
