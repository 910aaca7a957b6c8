// Pre-tokenization for byte-level BPE: cutting text into the pieces that BPE
// merges never cross.  Hand-written equivalents of the split regexes of the
// GPT-2, Llama-3 (and Qwen2) and SmolLM tokenizers, over UTF-8 code points.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace diablo::model {

// The Hugging Face split regexes reproduced here, as tokenizer.json spells
// them: GPT-2's, and Llama-3's around its number part (\p{N}{1,3} for
// Llama-3, \p{N} for Qwen2).  The reader recognises them, the exporter writes
// them.
inline constexpr std::string_view kGpt2SplitRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kLlama3SplitRegexHead =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|)";
inline constexpr std::string_view kLlama3SplitRegexTail =
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The regex that splits text into words.
enum class SplitRegex {
  kNone,  // no regex split (the whole text is one piece)
  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kGpt2,
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,K}|
  //  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+     (K = max_digits)
  kLlama3,
};

struct PreTokenizerConfig {
  // Before the regex: isolate numbers (\p{N}), each one alone when
  // individual_digits, else runs of them (Hugging Face's Digits step; SmolLM
  // and StarCoder use it with individual digits).
  bool isolate_digits = false;
  bool individual_digits = true;
  SplitRegex regex = SplitRegex::kGpt2;
  int max_digits = 3;             // K of kLlama3: 3 for Llama-3, 1 for Qwen2
  bool add_prefix_space = false;  // ByteLevel's option: prepend ' ' unless present

  // "gpt2", "smollm (digits + gpt2)", "llama3 (digits up to 3)", ...
  std::string Describe() const;
};

// A piece of the input: byte range [begin, end) of the text.
using TextPiece = std::pair<size_t, size_t>;

// Cuts `text` into pieces that together cover it in order.  Invalid UTF-8
// bytes are carried along as characters of no class.  Does not apply
// add_prefix_space (the caller owns the text and its offsets).
std::vector<TextPiece> PreTokenize(std::string_view text, const PreTokenizerConfig& config);

}  // namespace diablo::model
