// Unicode classes from the generated run table (scripts/gen_unicode_tables.py)
// and a UTF-8 decoder that accepts exactly the well-formed sequences of the
// Unicode standard (no overlongs, no surrogates, nothing above U+10FFFF).
#include "text/unicode_classes.h"

#include <algorithm>
#include <iterator>

namespace diablo::model {
namespace {

struct CharRun {
  uint32_t first;
  CharClass cls;
};
constexpr CharClass kOther = CharClass::kOther;
constexpr CharClass kLetter = CharClass::kLetter;
constexpr CharClass kNumber = CharClass::kNumber;
constexpr CharClass kWhitespace = CharClass::kWhitespace;
#include "text/unicode_tables.inc"

// Length of the well-formed UTF-8 sequence at the start of `s` (1..4), or 0
// when it is ill-formed; the second-byte ranges follow Table 3-7 of the
// Unicode standard.  `*length_if_bad` receives how many bytes form the maximal
// ill-formed prefix, so callers can replace each such prefix once.
size_t WellFormedLength(std::string_view s, uint32_t* code_point, size_t* length_if_bad) {
  const auto b = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t b0 = b(0);
  *length_if_bad = 1;
  if (b0 < 0x80) {
    *code_point = b0;
    return 1;
  }
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  uint32_t cp = b0 & (need == 2 ? 0x1F : need == 3 ? 0x0F : 0x07);
  for (size_t i = 1; i < need; ++i) {
    const uint8_t lower = i == 1 ? lo : 0x80, upper = i == 1 ? hi : 0xBF;
    if (i >= s.size() || b(i) < lower || b(i) > upper) {
      *length_if_bad = i;
      return 0;
    }
    cp = (cp << 6) | (b(i) & 0x3F);
  }
  *code_point = cp;
  return need;
}

}  // namespace

CharClass ClassOf(uint32_t code_point) {
  if (code_point > 0x10FFFF) return CharClass::kOther;
  // The last run whose first code point is <= code_point.
  const auto* it = std::upper_bound(std::begin(kCharRuns), std::end(kCharRuns), code_point,
                                    [](uint32_t cp, const CharRun& run) { return cp < run.first; });
  return std::prev(it)->cls;
}

std::vector<TextUnit> DecodeUtf8(std::string_view text) {
  std::vector<TextUnit> units;
  units.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    uint32_t cp = 0;
    size_t bad = 0;
    const size_t n = WellFormedLength(text.substr(pos), &cp, &bad);
    if (n == 0) {
      units.push_back({TextUnit::kInvalidUnit, static_cast<uint32_t>(pos), 1, CharClass::kOther});
      ++pos;
      continue;
    }
    units.push_back({cp, static_cast<uint32_t>(pos), static_cast<uint32_t>(n), ClassOf(cp)});
    pos += n;
  }
  return units;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string SanitizeUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    uint32_t cp = 0;
    size_t bad = 0;
    const size_t n = WellFormedLength(bytes.substr(pos), &cp, &bad);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
      pos += bad;
    } else {
      out.append(bytes.substr(pos, n));
      pos += n;
    }
  }
  return out;
}

}  // namespace diablo::model
