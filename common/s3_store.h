// Object storage over the S3 protocol (AWS S3 and S3-compatible servers):
// SigV4-signed requests over libcurl.  URI: s3://bucket[/prefix]; settings
// come from the environment (see docs/operations.md): AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION (default us-east-1),
// DIABLO_S3_ENDPOINT (e.g. http://127.0.0.1:9000; default AWS), and
// DIABLO_S3_PATH_STYLE=1 for servers without virtual-host buckets.
#pragma once

#include <memory>
#include <string_view>

#include "common/object_store.h"

namespace diablo {

absl::StatusOr<std::unique_ptr<ObjectStore>> OpenS3Store(std::string_view uri);

}  // namespace diablo
