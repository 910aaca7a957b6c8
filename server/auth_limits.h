// What the authenticator keeps in memory about its callers, every table of
// it bounded: token buckets by key (per token for the request rate, per
// client address for failed authentications), and who a client is for
// those limits.  A caller can make new keys for free (random tokens, new
// connections), so each table holds a fixed maximum of entries and forgets
// the least recently used one first.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/lru_cache.h"

namespace diablo::server {

// Who a gRPC peer ("ipv4:10.1.2.3:50123", "ipv6:[2001:db8::1]:50123") is
// for rate limits: its address without the port, which changes with every
// connection; for IPv6 its /64 network, which one subscriber usually holds
// entirely (so rotating through it gains nothing); an IPv4-mapped IPv6
// address as the IPv4 address it is.  Anything else (a unix socket, an
// empty peer) is kept as it is.
std::string PeerAddress(std::string_view peer);

// Token buckets by key: each refills at `per_second` up to `burst`.  At
// most `max_keys` are kept; a key forgotten starts again full, as it would
// after a long idle spell.  `now` is a steady clock's seconds, so that a
// wall-clock jump neither refills nor starves a bucket.  Not thread-safe.
class RateLimiter {
 public:
  RateLimiter(double per_second, double burst, size_t max_keys);

  // Whether `key` has a whole token at `now`; takes nothing, remembers
  // nothing new (asking about a new key costs no memory).
  bool Allows(const std::string& key, double now);
  // Takes one token; false, taking nothing, when there is none.
  bool Take(const std::string& key, double now);
  // Seconds until `key` has a whole token again; 0 when it has one.
  double SecondsUntilAllowed(const std::string& key, double now);

  size_t size() const { return buckets_.size(); }
  double per_second() const { return per_second_; }

 private:
  struct Bucket {
    double tokens = 0;
    double updated = 0;
  };
  // The bucket refilled to `now`; nullptr when `key` has none (it is full).
  Bucket* Refilled(const std::string& key, double now);

  double per_second_;
  double burst_;
  LruCache<std::string, Bucket> buckets_;
};

}  // namespace diablo::server
