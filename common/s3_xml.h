// The little XML the S3 backend reads and writes: ListObjectsV2 pages, error
// bodies, CreateMultipartUpload / CompleteMultipartUpload.  S3's responses are
// flat and regular, so a careful scanner (with entity decoding) is enough; no
// general XML parser is needed.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/object_store.h"

namespace diablo::s3 {

// Decodes the five predefined entities and numeric references (&#38; &#x26;);
// anything else is kept as written.
std::string XmlUnescape(std::string_view text);
// Escapes & < > " ' for element content.
std::string XmlEscape(std::string_view text);

// The raw content of every <tag>…</tag> (or empty for <tag/>) in document
// order.  `tag` never matches a longer name (<Key> is not <KeyCount>).
std::vector<std::string_view> XmlElements(std::string_view xml, std::string_view tag);
// The decoded text of the first <tag>, if any.
std::optional<std::string> XmlText(std::string_view xml, std::string_view tag);

// One page of a ListObjectsV2 answer; keys are as stored (full, with prefix).
struct ListPage {
  std::vector<ObjectInfo> objects;
  bool truncated = false;
  std::string next_continuation_token;
};
// INTERNAL when the body is not a ListBucketResult or a size is not a number.
absl::StatusOr<ListPage> ParseListObjectsV2(std::string_view xml);

// <Error><Code>…</Code><Message>…</Message></Error>; empty fields when the
// body has none (HEAD answers carry no body).
struct ErrorBody {
  std::string code;
  std::string message;
};
ErrorBody ParseErrorBody(std::string_view xml);

// The body of CompleteMultipartUpload from (part number, ETag) pairs.
std::string CompleteMultipartUploadXml(const std::vector<std::pair<int, std::string>>& parts);

}  // namespace diablo::s3
