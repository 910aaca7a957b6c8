// AWS Signature Version 4, Authorization-header form, as S3 uses it.  A pure
// function of the request, the time and the credentials, so it is checked
// against AWS's published examples without any network.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace diablo::sigv4 {

struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  // Temporary credentials only; sent (and signed) as x-amz-security-token.
  std::string session_token;
};

using Headers = std::vector<std::pair<std::string, std::string>>;
using QueryParams = std::vector<std::pair<std::string, std::string>>;

// The hex SHA-256 of an empty body, and the marker for an unhashed body.
inline constexpr std::string_view kEmptyPayloadSha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
inline constexpr std::string_view kUnsignedPayload = "UNSIGNED-PAYLOAD";

struct Request {
  std::string_view method;
  // The absolute path exactly as sent, already encoded (UriEncode with '/'
  // kept).  S3 signs the path once-encoded, unlike the other services.
  std::string_view canonical_uri;
  // Names and values unencoded; the signer encodes and sorts them.
  QueryParams query;
  // Every header to sign; must include "host".  Names in any case.
  Headers headers;
  // Hex SHA-256 of the body, or kUnsignedPayload.
  std::string_view payload_sha256;
};

struct Signature {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signature;      // 64 lower-case hex digits
  std::string authorization;  // the Authorization header value
  // The headers to send: the request's own plus x-amz-date,
  // x-amz-content-sha256, x-amz-security-token (with a session token) and
  // Authorization.
  Headers headers;
};

// Signs `request`.  x-amz-date and x-amz-content-sha256 are added (and signed)
// unless the request already carries them.
Signature Sign(const Request& request, std::chrono::system_clock::time_point time,
               const Credentials& credentials, std::string_view region, std::string_view service);

// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters
// (A-Z a-z 0-9 - . _ ~) stay, every other byte becomes %XX (upper case);
// '/' stays when `keep_slash` (paths) and is encoded otherwise (query values).
std::string UriEncode(std::string_view text, bool keep_slash);

// name=value pairs encoded, sorted by name then value, joined by '&'; a name
// without value gives "name=".  The same string is used in the request URL.
std::string CanonicalQueryString(const QueryParams& query);

// The ISO 8601 basic timestamp SigV4 signs, e.g. 20130524T000000Z.
std::string AmzDate(std::chrono::system_clock::time_point time);

// HMAC-SHA256 of `data` under `key`, as 32 raw bytes.
std::string HmacSha256(std::string_view key, std::string_view data);

}  // namespace diablo::sigv4
