// Unicode NFC normalisation (Qwen2's tokenizer.json asks for it) with a map
// from every byte of the result back to the input, so that token offsets and
// training masks still refer to the caller's text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace diablo::model {

struct NormalizedText {
  std::string text;
  // For each byte of `text`: the input byte range [source_begin, source_end)
  // of the characters it was made from.
  std::vector<uint32_t> source_begin;
  std::vector<uint32_t> source_end;
};

// Canonical decomposition, canonical ordering and canonical composition
// (Unicode Standard Annex #15).  Invalid UTF-8 bytes pass through unchanged
// and block composition across them.
NormalizedText NormalizeNfc(std::string_view text);

// Canonical combining class of a code point (0 for starters).
uint8_t CombiningClass(uint32_t code_point);

}  // namespace diablo::model
