// Client addresses and bounded token buckets for the authenticator.
#include "server/auth_limits.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "common/absl_view.h"

namespace diablo::server {
namespace {

// "host:port" → "host" when what follows the last ':' is a port number.
std::string_view WithoutPort(std::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == address.size()) return address;
  for (char c : address.substr(colon + 1))
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return address;
  return address.substr(0, colon);
}

std::string Ipv6Network(std::string_view host) {
  // gRPC writes "[::1]" and, in newer releases, "%5B::1%5D"; a zone ("%25eth0") is dropped.
  std::string text =
      absl::StrReplaceAll(AbslView(host), {{"%5B", "["}, {"%5D", "]"}, {"%5b", "["}, {"%5d", "]"}});
  if (!text.empty() && text.front() == '[') text.erase(0, 1);
  if (!text.empty() && text.back() == ']') text.pop_back();
  if (const size_t zone = text.find('%'); zone != std::string::npos) text.resize(zone);
  in6_addr address{};
  if (inet_pton(AF_INET6, text.c_str(), &address) != 1)
    return absl::StrCat("ipv6:", AbslView(host));
  const uint8_t* b = address.s6_addr;
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(kMapped, kMapped + 12, b))
    return absl::StrFormat("ipv4:%d.%d.%d.%d", b[12], b[13], b[14], b[15]);
  return absl::StrFormat("ipv6:%02x%02x:%02x%02x:%02x%02x:%02x%02x::/64", b[0], b[1], b[2], b[3],
                         b[4], b[5], b[6], b[7]);
}

}  // namespace

std::string PeerAddress(std::string_view peer) {
  if (peer.starts_with("ipv4:")) return std::string(WithoutPort(peer));
  if (peer.starts_with("ipv6:")) return Ipv6Network(WithoutPort(peer.substr(5)));
  return std::string(peer);
}

RateLimiter::RateLimiter(double per_second, double burst, size_t max_keys)
    : per_second_(per_second), burst_(std::max(burst, 1.0)), buckets_(max_keys) {}

RateLimiter::Bucket* RateLimiter::Refilled(const std::string& key, double now) {
  Bucket* bucket = buckets_.Get(key);
  if (bucket == nullptr) return nullptr;
  bucket->tokens =
      std::min(burst_, bucket->tokens + std::max(0.0, now - bucket->updated) * per_second_);
  bucket->updated = now;
  return bucket;
}

bool RateLimiter::Allows(const std::string& key, double now) {
  const Bucket* bucket = Refilled(key, now);
  return bucket == nullptr || bucket->tokens >= 1;
}

bool RateLimiter::Take(const std::string& key, double now) {
  Bucket* bucket = Refilled(key, now);
  if (bucket == nullptr) bucket = &buckets_.Put(key, Bucket{burst_, now});
  if (bucket->tokens < 1) return false;
  bucket->tokens -= 1;
  return true;
}

double RateLimiter::SecondsUntilAllowed(const std::string& key, double now) {
  const Bucket* bucket = Refilled(key, now);
  if (bucket == nullptr || bucket->tokens >= 1 || per_second_ <= 0) return 0;
  return (1 - bucket->tokens) / per_second_;
}

}  // namespace diablo::server
