// UTF-8 decoding and the three Unicode character classes that the byte-level
// BPE pre-tokenizers split on (\p{L}, \p{N}, \s), from generated tables.
// Invalid UTF-8 is never an error here: each bad byte becomes one unit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace diablo::model {

enum class CharClass : uint8_t { kOther, kLetter, kNumber, kWhitespace };

// Class of one code point; code points outside Unicode are kOther.
CharClass ClassOf(uint32_t code_point);

// One unit of text: a well-formed UTF-8 character, or a single byte that is
// not part of one (then `code_point` is kInvalidUnit and the class kOther).
struct TextUnit {
  static constexpr uint32_t kInvalidUnit = 0xFFFFFFFF;
  uint32_t code_point;
  uint32_t begin;  // byte offset in the text
  uint32_t size;   // bytes, 1..4
  CharClass cls;
};

// Splits `text` into units.  REQUIRES: text.size() < 4 GiB.
std::vector<TextUnit> DecodeUtf8(std::string_view text);

// Appends the UTF-8 encoding of `code_point` (<= 0x10FFFF) to `out`.
void AppendUtf8(uint32_t code_point, std::string* out);

// Returns `bytes` with every maximal ill-formed subsequence replaced by
// U+FFFD, the policy of the Unicode standard (and of Rust's from_utf8_lossy,
// which Hugging Face's decoders use).
std::string SanitizeUtf8(std::string_view bytes);

}  // namespace diablo::model
