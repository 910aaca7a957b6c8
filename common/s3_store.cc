// Placeholder until the S3 backend lands.
#include "common/s3_store.h"

#include "absl/strings/str_cat.h"
#include "common/absl_view.h"

namespace diablo {

absl::StatusOr<std::unique_ptr<ObjectStore>> OpenS3Store(std::string_view uri) {
  return absl::UnimplementedError(absl::StrCat("storage URI ", AbslView(uri), ": s3:// is not available in this build"));
}

}  // namespace diablo
