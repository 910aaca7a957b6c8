// Scanning S3's flat XML answers and writing the multipart completion body.
#include "common/s3_xml.h"

#include <cstdint>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/absl_view.h"

namespace diablo::s3 {
namespace {

void AppendUtf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Decodes the entity `name` (between '&' and ';'); false when unknown.
bool DecodeEntity(std::string_view name, std::string& out) {
  if (name == "amp")
    out.push_back('&');
  else if (name == "lt")
    out.push_back('<');
  else if (name == "gt")
    out.push_back('>');
  else if (name == "quot")
    out.push_back('"');
  else if (name == "apos")
    out.push_back('\'');
  else if (name.size() > 1 && name[0] == '#') {
    uint32_t cp = 0;
    const bool hex = name[1] == 'x' || name[1] == 'X';
    std::string_view digits = name.substr(hex ? 2 : 1);
    if (digits.empty() || digits.size() > 8) return false;
    for (char c : digits) {
      int v = -1;
      if (c >= '0' && c <= '9')
        v = c - '0';
      else if (hex && c >= 'a' && c <= 'f')
        v = c - 'a' + 10;
      else if (hex && c >= 'A' && c <= 'F')
        v = c - 'A' + 10;
      if (v < 0) return false;
      cp = cp * (hex ? 16 : 10) + static_cast<uint32_t>(v);
    }
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    AppendUtf8(out, cp);
  } else {
    return false;
  }
  return true;
}

}  // namespace

std::string XmlUnescape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '&') {
      const size_t semi = text.find(';', i + 1);
      // Entity names are short; a far ';' means a bare '&' in sloppy input.
      if (semi != std::string_view::npos && semi - i <= 12 &&
          DecodeEntity(text.substr(i + 1, semi - i - 1), out)) {
        i = semi;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

std::string XmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::vector<std::string_view> XmlElements(std::string_view xml, std::string_view tag) {
  std::vector<std::string_view> out;
  const std::string open = absl::StrCat("<", AbslView(tag));
  const std::string close = absl::StrCat("</", AbslView(tag), ">");
  size_t pos = 0;
  while ((pos = xml.find(open, pos)) != std::string_view::npos) {
    size_t after = pos + open.size();
    if (after >= xml.size()) break;
    const char next = xml[after];
    // Only the exact name: '>' or attributes or '/>' may follow it.
    if (next != '>' && next != '/' && next != ' ' && next != '\t' && next != '\n' && next != '\r') {
      pos = after;
      continue;
    }
    const size_t tag_end = xml.find('>', after);
    if (tag_end == std::string_view::npos) break;
    if (xml[tag_end - 1] == '/') {  // <tag/>
      out.emplace_back();
      pos = tag_end + 1;
      continue;
    }
    const size_t content = tag_end + 1;
    const size_t end = xml.find(close, content);
    if (end == std::string_view::npos) break;
    out.push_back(xml.substr(content, end - content));
    pos = end + close.size();
  }
  return out;
}

std::optional<std::string> XmlText(std::string_view xml, std::string_view tag) {
  std::vector<std::string_view> found = XmlElements(xml, tag);
  if (found.empty()) return std::nullopt;
  return XmlUnescape(found.front());
}

absl::StatusOr<ListPage> ParseListObjectsV2(std::string_view xml) {
  if (xml.find("<ListBucketResult") == std::string_view::npos)
    return absl::InternalError(absl::StrCat("ListObjectsV2 answer is not a ListBucketResult: ",
                                            AbslView(xml.substr(0, 200))));
  ListPage page;
  for (std::string_view contents : XmlElements(xml, "Contents")) {
    std::optional<std::string> key = XmlText(contents, "Key");
    std::optional<std::string> size = XmlText(contents, "Size");
    int64_t bytes = 0;
    if (!key || !size || !absl::SimpleAtoi(*size, &bytes) || bytes < 0)
      return absl::InternalError(absl::StrCat("malformed <Contents> in a ListObjectsV2 answer: ",
                                              AbslView(contents.substr(0, 200))));
    page.objects.push_back({std::move(*key), bytes});
  }
  // <Contents> holds no <IsTruncated>, so the first one is the page's.
  page.truncated = XmlText(xml, "IsTruncated").value_or("false") == "true";
  page.next_continuation_token = XmlText(xml, "NextContinuationToken").value_or("");
  if (page.truncated && page.next_continuation_token.empty())
    return absl::InternalError(
        "ListObjectsV2 answer is truncated but has no NextContinuationToken");
  return page;
}

ErrorBody ParseErrorBody(std::string_view xml) {
  return {XmlText(xml, "Code").value_or(""), XmlText(xml, "Message").value_or("")};
}

std::string CompleteMultipartUploadXml(const std::vector<std::pair<int, std::string>>& parts) {
  std::string xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">";
  for (const auto& [number, etag] : parts)
    absl::StrAppend(&xml, "<Part><PartNumber>", number, "</PartNumber><ETag>", XmlEscape(etag),
                    "</ETag></Part>");
  xml += "</CompleteMultipartUpload>";
  return xml;
}

}  // namespace diablo::s3
