// The S3 backend's XML scanner: entities, exact tag names, ListObjectsV2
// pages, error bodies and the multipart completion body.
#include "common/s3_xml.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace diablo::s3 {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(S3Xml, UnescapesEntities) {
  EXPECT_EQ(XmlUnescape("a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos;"), "a & b <c> \"d\" 'e'");
  EXPECT_EQ(XmlUnescape("&#38;&#x26;&#X41;&#233;"), "&&A\xC3\xA9");
  EXPECT_EQ(XmlUnescape("&#x1F600;"), "\xF0\x9F\x98\x80");
  // Not entities: kept as written.
  EXPECT_EQ(XmlUnescape("a & b; &unknown; &#xZZ; &#0; &"), "a & b; &unknown; &#xZZ; &#0; &");
  EXPECT_EQ(XmlUnescape("&amp;amp;"), "&amp;");  // decoded once, never twice
}

TEST(S3Xml, EscapeRoundTrips) {
  const std::string text = "\"etag\" & <key> 'x'";
  EXPECT_EQ(XmlEscape(text), "&quot;etag&quot; &amp; &lt;key&gt; &apos;x&apos;");
  EXPECT_EQ(XmlUnescape(XmlEscape(text)), text);
}

TEST(S3Xml, ElementsMatchTheExactName) {
  const std::string xml =
      "<R><KeyCount>2</KeyCount><Key>a</Key><Keys>no</Keys><Key/><Key attr=\"1\">b</Key></R>";
  EXPECT_THAT(XmlElements(xml, "Key"), ElementsAre("a", "", "b"));
  EXPECT_EQ(XmlText(xml, "KeyCount"), "2");
  EXPECT_EQ(XmlText(xml, "Missing"), std::nullopt);
  EXPECT_THAT(XmlElements("<Key>unterminated", "Key"), ElementsAre());
}

TEST(S3Xml, ParsesAListObjectsV2Page) {
  const std::string xml = R"(<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name><Prefix>jobs/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <Contents><Key>jobs/a &amp; b.txt</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>
    <ETag>&quot;abc&quot;</ETag><Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key>jobs/c&lt;d</Key><Size>0</Size></Contents>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
</ListBucketResult>)";
  auto page = ParseListObjectsV2(xml);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->objects.size(), 2u);
  EXPECT_EQ(page->objects[0].key, "jobs/a & b.txt");
  EXPECT_EQ(page->objects[0].size_bytes, 12);
  EXPECT_EQ(page->objects[1].key, "jobs/c<d");
  EXPECT_EQ(page->objects[1].size_bytes, 0);
  EXPECT_TRUE(page->truncated);
  EXPECT_EQ(page->next_continuation_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
}

TEST(S3Xml, LastPageAndEmptyListing) {
  auto page =
      ParseListObjectsV2("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(page->objects.empty());
  EXPECT_FALSE(page->truncated);
}

TEST(S3Xml, RejectsMalformedListings) {
  EXPECT_FALSE(ParseListObjectsV2("<Error><Code>AccessDenied</Code></Error>").ok());
  EXPECT_FALSE(
      ParseListObjectsV2("<ListBucketResult><Contents><Key>k</Key><Size>x</Size></Contents>"
                         "</ListBucketResult>")
          .ok());
  EXPECT_FALSE(
      ParseListObjectsV2("<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>")
          .ok());
  // Truncated with no way to continue would loop or silently stop.
  EXPECT_FALSE(
      ParseListObjectsV2("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>")
          .ok());
}

TEST(S3Xml, ParsesErrorBodies) {
  const ErrorBody e = ParseErrorBody(
      "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The key &apos;x&apos; does not "
      "exist"
      "</Message><Key>x</Key><RequestId>1</RequestId></Error>");
  EXPECT_EQ(e.code, "NoSuchKey");
  EXPECT_EQ(e.message, "The key 'x' does not exist");
  const ErrorBody none = ParseErrorBody("");
  EXPECT_EQ(none.code, "");
  EXPECT_EQ(none.message, "");
}

TEST(S3Xml, CompleteMultipartUploadBody) {
  const std::string xml = CompleteMultipartUploadXml({{1, "\"a1\""}, {2, "\"b2\""}});
  EXPECT_THAT(xml, HasSubstr("<Part><PartNumber>1</PartNumber><ETag>&quot;a1&quot;</ETag></Part>"
                             "<Part><PartNumber>2</PartNumber><ETag>&quot;b2&quot;</ETag></Part>"));
  EXPECT_THAT(xml, ::testing::StartsWith("<CompleteMultipartUpload"));
  EXPECT_THAT(xml, ::testing::EndsWith("</CompleteMultipartUpload>"));
}

}  // namespace
}  // namespace diablo::s3
