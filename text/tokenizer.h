// The tokenizer interface the compute plane uses (data pipeline, generation,
// `diablo tokenize`), and the factory that picks an implementation from a
// model path: a .gguf file, a tokenizer.json, a tokenizer.model, or a
// directory holding one of them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace diablo::model {

struct EncodeOptions {
  // Add what the model's metadata says every sequence gets (BOS and/or EOS).
  bool add_special = true;
  // Recognise special tokens written in the text ("<|im_start|>").  Turn off
  // for untrusted user content so it cannot forge control tokens; added
  // tokens that are not special are recognised either way.
  bool parse_special = true;
};

struct Encoding {
  std::vector<int32_t> ids;
  // Byte range of the input text that each token came from; tokens added by
  // add_special cover an empty range at their end of the text.
  std::vector<std::pair<size_t, size_t>> offsets;
};

// Special ids a model declares; absent ones are std::nullopt.
struct SpecialIds {
  std::optional<int32_t> bos, eos, unk, pad;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text to ids.  Text need not be valid UTF-8 (bad bytes are tokenized as
  // bytes by byte-level BPE).  Thread-safe.
  virtual Encoding EncodeWithOffsets(std::string_view text, const EncodeOptions& options) const = 0;
  std::vector<int32_t> Encode(std::string_view text, bool add_special = true) const {
    return EncodeWithOffsets(text, {.add_special = add_special}).ids;
  }
  std::vector<int32_t> Encode(std::string_view text, const EncodeOptions& options) const {
    return EncodeWithOffsets(text, options).ids;
  }

  // Ids to text; byte sequences that are not valid UTF-8 become U+FFFD.
  // Throws std::out_of_range for an id outside the vocabulary.
  virtual std::string Decode(std::span<const int32_t> ids, bool skip_special = false) const = 0;

  // The vocabulary's own spelling of a token (byte-level BPE shows a leading
  // space as "Ġ").  IdToToken throws std::out_of_range for a bad id.
  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
  virtual std::string IdToToken(int32_t id) const = 0;
  virtual size_t vocab_size() const = 0;

  const SpecialIds& special_ids() const { return special_ids_; }
  std::optional<int32_t> bos_id() const { return special_ids_.bos; }
  std::optional<int32_t> eos_id() const { return special_ids_.eos; }
  // Control tokens: never produced from ordinary text, skipped by
  // Decode(skip_special=true).  Sorted.
  const std::vector<int32_t>& special_token_ids() const { return special_token_ids_; }
  bool IsSpecial(int32_t id) const;

  // One line for logs and `diablo tokenize`: kind, vocabulary, pre-tokenizer.
  virtual std::string Describe() const = 0;

 protected:
  SpecialIds special_ids_;
  std::vector<int32_t> special_token_ids_;
};

// Loads the tokenizer of a model.  `path` is one of
//   *.gguf              tokenizer.ggml.* metadata (byte-level BPE, "gpt2")
//   tokenizer.json      Hugging Face byte-level BPE (tokenizer_config.json
//                       beside it, if present, names BOS/EOS)
//   tokenizer.model     SentencePiece (Llama-2, Mistral), when this build has it
//   a directory         holding tokenizer.json (preferred) or tokenizer.model
// Throws FormatError for a malformed or unsupported tokenizer, naming the
// file and the item, and std::runtime_error when nothing usable is there.
std::unique_ptr<Tokenizer> LoadTokenizer(const std::string& path);

// Whether this build can read SentencePiece tokenizer.model files.
bool HaveSentencePiece();

}  // namespace diablo::model
