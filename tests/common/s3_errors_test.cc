// S3 answers to statuses: each class of answer gets its status, and every
// message names the object and carries S3's code and message.
#include "common/s3_errors.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace diablo::s3 {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

HttpResponse Answer(long status, std::string code = "", std::string message = "") {
  HttpResponse r;
  r.status = status;
  if (!code.empty())
    r.body = "<Error><Code>" + code + "</Code><Message>" + message + "</Message></Error>";
  return r;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(S3Errors, StatusPerAnswer) {
  const std::string what = "s3://bucket/jobs/j-1/x";
  EXPECT_EQ(StatusFromAnswer(Answer(404, "NoSuchKey", "gone"), what).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(StatusFromAnswer(Answer(403, "AccessDenied", "no"), what).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(StatusFromAnswer(Answer(401), what).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(StatusFromAnswer(Answer(400, "InvalidRequest", "bad"), what).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StatusFromAnswer(Answer(301, "PermanentRedirect", "elsewhere"), what).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StatusFromAnswer(Answer(409, "OperationAborted", "busy"), what).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StatusFromAnswer(Answer(503, "SlowDown", "slow"), what).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(StatusFromAnswer(Answer(500, "InternalError", "oops"), what).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(StatusFromAnswer(Answer(418), what).code(), absl::StatusCode::kUnknown);
}

TEST(S3Errors, MessagesNameTheObjectAndS3sWords) {
  const absl::Status denied = StatusFromAnswer(
      Answer(403, "SignatureDoesNotMatch", "The request signature we calculated does not match"),
      "s3://bucket/p/k");
  EXPECT_THAT(Message(denied),
              AllOf(HasSubstr("s3://bucket/p/k"), HasSubstr("HTTP 403 SignatureDoesNotMatch"),
                    HasSubstr("does not match"), HasSubstr("AWS_SECRET_ACCESS_KEY")));
  // HEAD answers have no body: the HTTP status still says what happened.
  EXPECT_THAT(Message(StatusFromAnswer(Answer(404), "s3://bucket/k")),
              AllOf(HasSubstr("s3://bucket/k"), HasSubstr("HTTP 404")));
}

TEST(S3Errors, WrongRegionNamesTheRightOne) {
  HttpResponse moved = Answer(301, "PermanentRedirect", "use the right endpoint");
  moved.headers["x-amz-bucket-region"] = "eu-central-1";
  EXPECT_THAT(Message(StatusFromAnswer(moved, "s3://bucket/k")),
              AllOf(HasSubstr("eu-central-1"), HasSubstr("AWS_REGION")));
}

TEST(S3Errors, RetryableStatuses) {
  for (long status : {429L, 500L, 502L, 503L, 504L}) EXPECT_TRUE(IsRetryableHttpStatus(status));
  for (long status : {200L, 301L, 400L, 403L, 404L, 409L, 416L, 501L})
    EXPECT_FALSE(IsRetryableHttpStatus(status)) << status;
}

}  // namespace
}  // namespace diablo::s3
