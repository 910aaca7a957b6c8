// Object storage over the S3 protocol (AWS S3 and S3-compatible servers):
// SigV4-signed requests over libcurl.  URI: s3://bucket[/prefix]; settings
// come from the environment (docs/storage.md lists them): AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION (or AWS_DEFAULT_REGION;
// default us-east-1), DIABLO_S3_ENDPOINT (e.g. http://127.0.0.1:9000; default
// https://s3.<region>.amazonaws.com), DIABLO_S3_PATH_STYLE (1: path-style
// addressing, as most S3-compatible servers need; the default when an endpoint
// is set), DIABLO_S3_MULTIPART_THRESHOLD_BYTES and DIABLO_S3_PART_BYTES.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/object_store.h"

namespace diablo {

struct S3Settings {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // temporary credentials only
  std::string region = "us-east-1";
  // scheme://host[:port], no path; empty: https://s3.<region>.amazonaws.com.
  std::string endpoint;
  // true: https://host/bucket/key; false: https://bucket.host/key.  Unset:
  // path style when `endpoint` is set (S3-compatible servers), virtual-host
  // style for AWS.
  std::optional<bool> path_style;
  // Files larger than this go up as multipart uploads of part_bytes parts
  // (S3 wants at least 5 MiB for every part but the last).
  int64_t multipart_threshold_bytes = int64_t{64} << 20;
  int64_t part_bytes = int64_t{16} << 20;
  // max-keys of each ListObjectsV2 page (S3 caps it at 1000).
  int list_page_keys = 1000;
  // Further attempts after a connection failure or a 5xx / 429 answer.
  int max_retries = 3;
};

// The settings the environment gives; INVALID_ARGUMENT naming the variable
// when one is malformed.  Missing credentials are reported by OpenS3Store.
absl::StatusOr<S3Settings> S3SettingsFromEnvironment();

// Opens s3://bucket[/prefix] with the environment's settings, or with
// `settings`.  No request is made.  FAILED_PRECONDITION when credentials are
// missing, INVALID_ARGUMENT for a malformed URI or setting.
absl::StatusOr<std::unique_ptr<ObjectStore>> OpenS3Store(std::string_view uri);
absl::StatusOr<std::unique_ptr<ObjectStore>> OpenS3Store(std::string_view uri,
                                                         const S3Settings& settings);

// Creates the bucket of `uri` (CreateBucket, with a LocationConstraint
// outside us-east-1); a bucket the caller already owns is not an error.  For
// tests and first-time setup of S3-compatible servers.
absl::Status CreateS3Bucket(std::string_view uri, const S3Settings& settings);

}  // namespace diablo
