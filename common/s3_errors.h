// How S3's answers become statuses: which answers are worth another attempt,
// and the absl::Status of a failed one, naming the object and carrying S3's
// own <Code> and <Message>.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "common/s3_http.h"

namespace diablo::s3 {

// 500, 502, 503 (SlowDown), 504 and 429: the server or the network is
// briefly unable; the same request may succeed later.
bool IsRetryableHttpStatus(long status);

// The status of a non-2xx answer about `what` (s3://bucket/key): 404
// NOT_FOUND, 401/403 PERMISSION_DENIED, 400 INVALID_ARGUMENT, 301/307/308
// (another region) and 409/412 FAILED_PRECONDITION, retryable ones
// UNAVAILABLE, anything else UNKNOWN.
absl::Status StatusFromAnswer(const HttpResponse& response, std::string_view what);

}  // namespace diablo::s3
