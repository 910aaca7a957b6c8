// Mapping S3's HTTP answers to absl statuses.
#include "common/s3_errors.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/absl_view.h"
#include "common/s3_xml.h"

namespace diablo::s3 {

bool IsRetryableHttpStatus(long status) {
  return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

absl::Status StatusFromAnswer(const HttpResponse& response, std::string_view what_view) {
  const absl::string_view what = AbslView(what_view);
  const ErrorBody error = ParseErrorBody(response.body);
  std::string detail = absl::StrCat("HTTP ", response.status);
  if (!error.code.empty()) absl::StrAppend(&detail, " ", error.code);
  if (!error.message.empty()) absl::StrAppend(&detail, ": ", error.message);
  switch (response.status) {
    case 404:
      return absl::NotFoundError(absl::StrCat(what, " not found (", detail, ")"));
    case 401:
    case 403:
      return absl::PermissionDeniedError(
          absl::StrCat("access to ", what, " denied (", detail,
                       "); check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and "
                       "the bucket's policy"));
    case 400:
      return absl::InvalidArgumentError(
          absl::StrCat("S3 rejected the request for ", what, " (", detail, ")"));
    case 301:
    case 307:
    case 308: {
      // S3 names the bucket's region in a header when the request went to
      // the wrong one.
      auto region = response.headers.find("x-amz-bucket-region");
      return absl::FailedPreconditionError(
          absl::StrCat(what, " is served by another endpoint (", detail, ")",
                       region != response.headers.end()
                           ? absl::StrCat("; the bucket is in ", region->second, ", set AWS_REGION")
                           : ""));
    }
    case 409:
    case 412:
      return absl::FailedPreconditionError(
          absl::StrCat("S3 refused the request for ", what, " (", detail, ")"));
    default:
      if (IsRetryableHttpStatus(response.status))
        return absl::UnavailableError(
            absl::StrCat("S3 is unavailable for ", what, " (", detail, ")"));
      return absl::UnknownError(absl::StrCat("unexpected S3 answer for ", what, " (", detail, ")"));
  }
}

}  // namespace diablo::s3
