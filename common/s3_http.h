// One HTTP exchange over libcurl for the S3 backend: the body from memory or
// from a byte range of an open file, a successful answer into memory or into
// an open file, and limits so that no transfer hangs forever.  A fresh curl
// handle per exchange keeps concurrent callers independent.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace diablo::s3 {

// Seconds to establish a connection; then a transfer slower than
// kLowSpeedBytesPerSecond for kLowSpeedSeconds is abandoned.
inline constexpr long kConnectTimeoutSeconds = 10;
inline constexpr long kLowSpeedBytesPerSecond = 1024;
inline constexpr long kLowSpeedSeconds = 60;

struct HttpRequest {
  std::string method;  // GET, HEAD, PUT, POST, DELETE
  std::string url;     // already encoded
  std::vector<std::pair<std::string, std::string>> headers;
  // The body: `body`, or when body_fd >= 0, body_length bytes of body_fd from
  // body_offset (read with pread, so the descriptor's offset is untouched).
  std::string_view body;
  int body_fd = -1;
  int64_t body_offset = 0;
  int64_t body_length = 0;
  // When >= 0, a 2xx answer's body is written to this descriptor (at its
  // current offset); other answers' bodies always go to HttpResponse::body.
  int response_fd = -1;
  // Limit on the whole exchange; 0 leaves only the low-speed limit (large
  // transfers).
  long timeout_seconds = 0;
  // false for an answer the server may be slow to start (then
  // timeout_seconds alone bounds the wait).
  bool low_speed_limit = true;
};

struct HttpResponse {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names lower-cased
};

// UNAVAILABLE when no complete HTTP answer arrived (refused, reset, timed
// out, TLS failure), naming the URL; INTERNAL when writing response_fd or
// reading body_fd failed.  Any HTTP status is a successful exchange.
absl::StatusOr<HttpResponse> PerformHttp(const HttpRequest& request);

}  // namespace diablo::s3
