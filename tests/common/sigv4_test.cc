// The SigV4 signer against the worked examples of AWS's "Signature
// Calculations for the Authorization Header: Transferring Payload in a Single
// Chunk" (S3 API reference): same inputs, same canonical request, same
// signature.  Plus the encoding rules those examples do not reach.
#include "common/sigv4.h"

#include <chrono>

#include "common/sha256.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace diablo::sigv4 {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;

// The example credentials and moment of the AWS documentation.
const Credentials kExampleCredentials{"AKIAIOSFODNN7EXAMPLE",
                                      "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};
const auto kExampleTime =
    std::chrono::system_clock::from_time_t(1369353600);  // 2013-05-24T00:00:00Z
constexpr char kExampleHost[] = "examplebucket.s3.amazonaws.com";

std::string HeaderValue(const Signature& s, std::string_view name) {
  for (const auto& [n, v] : s.headers)
    if (n == name) return v;
  return "<absent>";
}

TEST(SigV4, TimestampFormat) { EXPECT_EQ(AmzDate(kExampleTime), "20130524T000000Z"); }

// "Example: GET Object": the first 10 bytes of test.txt, empty-body hash.
TEST(SigV4, AwsExampleGetObject) {
  Request request{.method = "GET",
                  .canonical_uri = "/test.txt",
                  .query = {},
                  .headers = {{"Host", kExampleHost}, {"Range", "bytes=0-9"}},
                  .payload_sha256 = kEmptyPayloadSha256};
  const Signature s = Sign(request, kExampleTime, kExampleCredentials, "us-east-1", "s3");
  EXPECT_EQ(
      s.canonical_request,
      "GET\n/test.txt\n\n"
      "host:examplebucket.s3.amazonaws.com\n"
      "range:bytes=0-9\n"
      "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
      "x-amz-date:20130524T000000Z\n\n"
      "host;range;x-amz-content-sha256;x-amz-date\n"
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(s.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
  EXPECT_EQ(s.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  EXPECT_EQ(s.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  // What goes on the wire carries what was signed.
  EXPECT_EQ(HeaderValue(s, "x-amz-date"), "20130524T000000Z");
  EXPECT_EQ(HeaderValue(s, "x-amz-content-sha256"), kEmptyPayloadSha256);
  EXPECT_EQ(HeaderValue(s, "Authorization"), s.authorization);
}

// "Example: PUT Object": a '$' in the key, a Date header, a signed body.
TEST(SigV4, AwsExamplePutObject) {
  const std::string body = "Welcome to Amazon S3.";
  const std::string body_hash = Sha256Hex(body);
  ASSERT_EQ(body_hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  const std::string uri = UriEncode("/test$file.text", /*keep_slash=*/true);
  ASSERT_EQ(uri, "/test%24file.text");
  Request request{.method = "PUT",
                  .canonical_uri = uri,
                  .query = {},
                  .headers = {{"Host", kExampleHost},
                              {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                              {"x-amz-storage-class", "REDUCED_REDUNDANCY"}},
                  .payload_sha256 = body_hash};
  const Signature s = Sign(request, kExampleTime, kExampleCredentials, "us-east-1", "s3");
  EXPECT_EQ(Sha256Hex(s.canonical_request),
            "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
  EXPECT_EQ(s.signature, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
  EXPECT_THAT(
      s.authorization,
      HasSubstr("SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,"));
}

// "Example: GET Bucket Lifecycle": a query parameter without a value.
TEST(SigV4, AwsExampleGetBucketLifecycle) {
  Request request{.method = "GET",
                  .canonical_uri = "/",
                  .query = {{"lifecycle", ""}},
                  .headers = {{"Host", kExampleHost}},
                  .payload_sha256 = kEmptyPayloadSha256};
  const Signature s = Sign(request, kExampleTime, kExampleCredentials, "us-east-1", "s3");
  EXPECT_THAT(s.canonical_request, ::testing::StartsWith("GET\n/\nlifecycle=\n"));
  EXPECT_EQ(s.signature, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

// "Example: Get Bucket (List Objects)": parameters given out of order are
// signed sorted.
TEST(SigV4, AwsExampleListObjects) {
  Request request{.method = "GET",
                  .canonical_uri = "/",
                  .query = {{"prefix", "J"}, {"max-keys", "2"}},
                  .headers = {{"Host", kExampleHost}},
                  .payload_sha256 = kEmptyPayloadSha256};
  const Signature s = Sign(request, kExampleTime, kExampleCredentials, "us-east-1", "s3");
  EXPECT_THAT(s.canonical_request, ::testing::StartsWith("GET\n/\nmax-keys=2&prefix=J\n"));
  EXPECT_EQ(s.signature, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

TEST(SigV4, ChangingAnyInputChangesTheSignature) {
  Request request{.method = "GET",
                  .canonical_uri = "/test.txt",
                  .query = {},
                  .headers = {{"Host", kExampleHost}, {"Range", "bytes=0-9"}},
                  .payload_sha256 = kEmptyPayloadSha256};
  const std::string reference =
      Sign(request, kExampleTime, kExampleCredentials, "us-east-1", "s3").signature;
  EXPECT_NE(Sign(request, kExampleTime, kExampleCredentials, "eu-west-1", "s3").signature,
            reference);
  EXPECT_NE(
      Sign(request, kExampleTime + std::chrono::seconds(1), kExampleCredentials, "us-east-1", "s3")
          .signature,
      reference);
  Credentials other = kExampleCredentials;
  other.secret_access_key.back() = 'X';
  EXPECT_NE(Sign(request, kExampleTime, other, "us-east-1", "s3").signature, reference);
  request.headers[1].second = "bytes=0-10";
  EXPECT_NE(Sign(request, kExampleTime, kExampleCredentials, "us-east-1", "s3").signature,
            reference);
}

TEST(SigV4, SessionTokenIsSentAndSigned) {
  Credentials temporary = kExampleCredentials;
  temporary.session_token = "token/with+chars=";
  Request request{.method = "HEAD",
                  .canonical_uri = "/a",
                  .query = {},
                  .headers = {{"Host", kExampleHost}},
                  .payload_sha256 = kEmptyPayloadSha256};
  const Signature s = Sign(request, kExampleTime, temporary, "us-east-1", "s3");
  EXPECT_EQ(HeaderValue(s, "x-amz-security-token"), "token/with+chars=");
  EXPECT_THAT(s.canonical_request, HasSubstr("\nx-amz-security-token:token/with+chars=\n"));
  EXPECT_THAT(
      s.authorization,
      HasSubstr("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"));
}

TEST(SigV4, HeaderValuesAreTrimmedAndNamesLowerCased) {
  Request request{.method = "PUT",
                  .canonical_uri = "/k",
                  .query = {},
                  .headers = {{"HOST", kExampleHost}, {"X-Amz-Meta-Note", "  two   words  "}},
                  .payload_sha256 = kUnsignedPayload};
  const Signature s = Sign(request, kExampleTime, kExampleCredentials, "us-east-1", "s3");
  EXPECT_THAT(s.canonical_request,
              HasSubstr("\nhost:examplebucket.s3.amazonaws.com\nx-amz-content-sha256:"));
  EXPECT_THAT(s.canonical_request, HasSubstr("\nx-amz-meta-note:two words\n"));
  EXPECT_THAT(s.canonical_request, EndsWith("\nUNSIGNED-PAYLOAD"));
}

TEST(SigV4, UriEncodeKeepsOnlyUnreservedCharacters) {
  EXPECT_EQ(UriEncode("AZaz09-._~", false), "AZaz09-._~");
  EXPECT_EQ(UriEncode("a b+c=d&e", false), "a%20b%2Bc%3Dd%26e");
  EXPECT_EQ(UriEncode("jobs/j 1/x", true), "jobs/j%201/x");
  EXPECT_EQ(UriEncode("jobs/j 1/x", false), "jobs%2Fj%201%2Fx");
  EXPECT_EQ(UriEncode("!'()*", false), "%21%27%28%29%2A");
  EXPECT_EQ(UriEncode("\xC3\xA9", true), "%C3%A9");  // UTF-8 bytes, upper-case hex
}

TEST(SigV4, CanonicalQueryEncodesAndSorts) {
  EXPECT_EQ(CanonicalQueryString({}), "");
  EXPECT_EQ(CanonicalQueryString({{"uploadId", "a/b+c=="}, {"partNumber", "2"}}),
            "partNumber=2&uploadId=a%2Fb%2Bc%3D%3D");
  EXPECT_EQ(CanonicalQueryString(
                {{"prefix", "jobs/a b"}, {"list-type", "2"}, {"continuation-token", ""}}),
            "continuation-token=&list-type=2&prefix=jobs%2Fa%20b");
}

}  // namespace
}  // namespace diablo::sigv4
