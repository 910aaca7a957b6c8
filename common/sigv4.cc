// SigV4 signing: canonical request, string to sign, derived signing key and
// the Authorization header (HMAC-SHA256 through OpenSSL).
#include "common/sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <ctime>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/absl_view.h"
#include "common/sha256.h"

namespace diablo::sigv4 {
namespace {

constexpr char kAlgorithm[] = "AWS4-HMAC-SHA256";

bool HasHeader(const Headers& headers, std::string_view name) {
  return std::any_of(headers.begin(), headers.end(), [&](const auto& h) {
    return absl::EqualsIgnoreCase(h.first, AbslView(name));
  });
}

// Header values are signed trimmed, with runs of spaces folded to one.
std::string CanonicalHeaderValue(std::string_view value) {
  std::string out;
  bool pending_space = false;
  for (char c : absl::StripAsciiWhitespace(AbslView(value))) {
    if (c == ' ' || c == '\t') {
      pending_space = true;
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  }
  return out;
}

}  // namespace

std::string UriEncode(std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (absl::ascii_isalnum(byte) || c == '-' || c == '.' || c == '_' || c == '~' ||
        (c == '/' && keep_slash)) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xF]);
    }
  }
  return out;
}

std::string CanonicalQueryString(const QueryParams& query) {
  std::vector<std::pair<std::string, std::string>> encoded;
  encoded.reserve(query.size());
  for (const auto& [name, value] : query)
    encoded.emplace_back(UriEncode(name, false), UriEncode(value, false));
  std::sort(encoded.begin(), encoded.end());
  return absl::StrJoin(encoded, "&", [](std::string* out, const auto& p) {
    absl::StrAppend(out, p.first, "=", p.second);
  });
}

std::string AmzDate(std::chrono::system_clock::time_point time) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y%m%dT%H%M%SZ", &utc);
  return buffer;
}

std::string HmacSha256(std::string_view key, std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest, &length);
  return std::string(reinterpret_cast<const char*>(digest), length);
}

Signature Sign(const Request& request, std::chrono::system_clock::time_point time,
               const Credentials& credentials, std::string_view region, std::string_view service) {
  const std::string amz_date = AmzDate(time);
  const std::string date = amz_date.substr(0, 8);

  Signature result;
  result.headers = request.headers;
  if (!HasHeader(result.headers, "x-amz-date")) result.headers.emplace_back("x-amz-date", amz_date);
  if (!HasHeader(result.headers, "x-amz-content-sha256"))
    result.headers.emplace_back("x-amz-content-sha256", std::string(request.payload_sha256));
  if (!credentials.session_token.empty() && !HasHeader(result.headers, "x-amz-security-token"))
    result.headers.emplace_back("x-amz-security-token", credentials.session_token);

  // Lower-case names, sorted; a repeated header is signed once with its
  // values joined by commas, as the HTTP semantics of repetition say.
  std::map<std::string, std::string> canonical;
  for (const auto& [name, value] : result.headers) {
    std::string& slot = canonical[absl::AsciiStrToLower(name)];
    if (!slot.empty()) slot.push_back(',');
    slot += CanonicalHeaderValue(value);
  }
  std::string canonical_headers;
  std::vector<std::string> names;
  for (const auto& [name, value] : canonical) {
    absl::StrAppend(&canonical_headers, name, ":", value, "\n");
    names.push_back(name);
  }
  const std::string signed_headers = absl::StrJoin(names, ";");

  result.canonical_request =
      absl::StrCat(AbslView(request.method), "\n", AbslView(request.canonical_uri), "\n",
                   CanonicalQueryString(request.query), "\n", canonical_headers, "\n",
                   signed_headers, "\n", AbslView(request.payload_sha256));
  const std::string scope =
      absl::StrCat(date, "/", AbslView(region), "/", AbslView(service), "/aws4_request");
  result.string_to_sign = absl::StrCat(kAlgorithm, "\n", amz_date, "\n", scope, "\n",
                                       Sha256Hex(result.canonical_request));

  std::string key = HmacSha256(absl::StrCat("AWS4", credentials.secret_access_key), date);
  key = HmacSha256(key, region);
  key = HmacSha256(key, service);
  key = HmacSha256(key, "aws4_request");
  result.signature = absl::BytesToHexString(HmacSha256(key, result.string_to_sign));

  result.authorization =
      absl::StrCat(kAlgorithm, " Credential=", credentials.access_key_id, "/", scope,
                   ",SignedHeaders=", signed_headers, ",Signature=", result.signature);
  result.headers.emplace_back("Authorization", result.authorization);
  return result;
}

}  // namespace diablo::sigv4
