// Byte-level BPE (GPT-2, Llama-3, Qwen2, SmolLM): added-token matching,
// pre-tokenization, merges by rank, and the byte <-> printable-character
// mapping that lets a vocabulary of strings cover every byte.  Loaded from a
// Hugging Face tokenizer.json (tokenizer_json.cc) or GGUF metadata
// (tokenizer_gguf.cc); both fill a BpeSpec.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "formats/gguf.h"
#include "text/pre_tokenizer.h"
#include "text/tokenizer.h"

namespace diablo::model {

// A token matched in the raw text before pre-tokenization.
struct AddedToken {
  std::string content;  // raw text, not byte-level encoded
  int32_t id = -1;
  bool special = true;       // a control token: honours parse_special / skip_special
  bool lstrip = false;       // also swallows whitespace on its left
  bool rstrip = false;       // ... and on its right
  bool single_word = false;  // only matches when not inside a word
};

// Everything a loader reads from a file, before any index is built.
struct BpeSpec {
  std::string source;              // the file, for messages
  std::vector<std::string> vocab;  // by id, byte-level spelling; "" for unused ids
  std::vector<std::pair<std::string, std::string>> merges;  // by rank
  std::vector<AddedToken> added;
  PreTokenizerConfig pre;
  std::string pre_name;        // e.g. "smollm"; informational
  bool ignore_merges = false;  // a word that is a whole token skips merging
  bool nfc = false;            // NFC-normalise text between added tokens
  SpecialIds special_ids;
  std::vector<int32_t> prefix_ids;  // added by add_special (e.g. BOS)
  std::vector<int32_t> suffix_ids;  // (e.g. EOS)
};

class BpeTokenizer : public Tokenizer {
 public:
  // Builds the indexes; throws FormatError (naming spec.source) when a merge
  // or an added token refers to a token the vocabulary lacks.
  explicit BpeTokenizer(BpeSpec spec);

  Encoding EncodeWithOffsets(std::string_view text, const EncodeOptions& options) const override;
  std::string Decode(std::span<const int32_t> ids, bool skip_special = false) const override;
  std::optional<int32_t> TokenToId(std::string_view token) const override;
  std::string IdToToken(int32_t id) const override;
  size_t vocab_size() const override { return spec_.vocab.size(); }
  std::string Describe() const override;

  const PreTokenizerConfig& pre_tokenizer() const { return spec_.pre; }

 private:
  struct MergeResult {
    int32_t rank;
    int32_t id;
  };
  // Appends the ids of one pre-tokenized word (raw bytes).
  void EncodeWord(std::string_view word, size_t offset, Encoding* out) const;
  std::vector<int32_t> MergeWord(std::string_view word) const;
  void EncodeText(std::string_view text, size_t offset, Encoding* out) const;
  // EncodeText after the normaliser, offsets mapped back to `text`.
  void EncodeSegment(std::string_view text, size_t offset, Encoding* out) const;
  // Leftmost-longest added token at or after `from`; returns its index in
  // spec_.added and the byte range it swallows, or -1.
  int FindAddedToken(std::string_view text, size_t from, bool parse_special, size_t* begin,
                     size_t* end) const;

  BpeSpec spec_;
  std::unordered_map<std::string, int32_t> token_to_id_;  // vocab and added tokens
  std::unordered_map<uint64_t, MergeResult> merges_;      // (left id, right id) -> merge
  std::vector<std::string> token_bytes_;                  // by id: the bytes it stands for
  int32_t byte_token_[256];                               // id of each byte's token, -1 if none
  std::unordered_map<int32_t, size_t> added_by_id_;       // id -> index in spec_.added
  std::vector<std::vector<size_t>> added_by_first_byte_;  // longest first

  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// The GPT-2 mapping from each byte to a printable character (bytes that are
// printable Latin-1 map to themselves, the others to U+0100 onwards).
uint32_t ByteToChar(uint8_t byte);

// Loaders.  `path` names the file in messages.
std::unique_ptr<BpeTokenizer> LoadTokenizerJson(const std::string& path);
std::unique_ptr<BpeTokenizer> LoadGgufTokenizer(const GgufFile& file, const std::string& path);
// The specs the two loaders build from, for exporting a vocabulary
// (tokenizer_export.h).  Throw FormatError like the loaders.
BpeSpec ReadTokenizerJsonSpec(const std::string& path);
BpeSpec ReadGgufBpeSpec(const GgufFile& file, const std::string& path);

}  // namespace diablo::model
