// Reads the byte-level BPE vocabulary ("gpt2" model) that llama.cpp's
// converters store in GGUF metadata (tokenizer.ggml.*) into a BpeSpec.  The
// pre-tokenizer is named, not stored: tokenizer.ggml.pre picks one of the
// splitters of pre_tokenizer.h.
#include <map>

#include "text/bpe_tokenizer.h"

namespace diablo::model {
namespace {

// GGUF token types (llama.cpp's llama_token_type).
enum GgufTokenType : int64_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct PreSpec {
  bool isolate_digits;
  SplitRegex regex;
  int max_digits;
  bool ignore_merges;
};

// tokenizer.ggml.pre values and what each one's original tokenizer.json does.
const std::map<std::string, PreSpec>& KnownPreTokenizers() {
  static const std::map<std::string, PreSpec> kKnown = {
      {"gpt2", {false, SplitRegex::kGpt2, 0, false}},
      {"smollm", {true, SplitRegex::kGpt2, 0, false}},
      {"starcoder", {true, SplitRegex::kGpt2, 0, false}},
      {"llama-bpe", {false, SplitRegex::kLlama3, 3, true}},
      {"llama3", {false, SplitRegex::kLlama3, 3, true}},
      {"qwen2", {false, SplitRegex::kLlama3, 1, false}},
  };
  return kKnown;
}

int64_t AsInt(const GgufArray::value_type& v) {
  if (const auto* u = std::get_if<uint64_t>(&v)) return static_cast<int64_t>(*u);
  if (const auto* i = std::get_if<int64_t>(&v)) return *i;
  return -1;
}

bool BoolOr(const GgufFile& file, const std::string& key, bool fallback) {
  auto it = file.metadata().find(key);
  if (it == file.metadata().end()) return fallback;
  if (const auto* b = std::get_if<bool>(&it->second)) return *b;
  if (const auto* u = std::get_if<uint64_t>(&it->second)) return *u != 0;
  return fallback;
}

std::vector<std::string> StringArray(const GgufFile& file, const std::string& key,
                                     const std::string& path) {
  std::vector<std::string> out;
  const GgufArray& array = file.GetArray(key);
  out.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    const auto* s = std::get_if<std::string>(&array[i]);
    if (s == nullptr) {
      throw FormatError(path + ": " + key + "[" + std::to_string(i) + "] is not a string");
    }
    out.push_back(*s);
  }
  return out;
}

// Only byte-level BPE ("gpt2") vocabularies are read.
void CheckBpeModel(const GgufFile& file, const std::string& path) {
  if (!file.Has("tokenizer.ggml.model")) {
    throw FormatError(path +
                      ": no tokenizer.ggml.model: this GGUF file carries no tokenizer; "
                      "point --model at the model's tokenizer.json instead");
  }
  const std::string kind = file.GetString("tokenizer.ggml.model");
  if (kind != "gpt2") {
    throw FormatError(path + ": tokenizer.ggml.model is \"" + kind +
                      "\"; this version reads "
                      "byte-level BPE (\"gpt2\") GGUF vocabularies only" +
                      (kind == "llama" ? "; for this SentencePiece model point --model at its "
                                         "tokenizer.model"
                                       : ""));
  }
}

std::vector<std::pair<std::string, std::string>> ReadMerges(const GgufFile& file,
                                                            const std::string& path) {
  std::vector<std::string> merges = StringArray(file, "tokenizer.ggml.merges", path);
  std::vector<std::pair<std::string, std::string>> pairs;
  pairs.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const size_t space = merges[i].find(' ');
    if (space == std::string::npos || merges[i].find(' ', space + 1) != std::string::npos) {
      throw FormatError(path + ": tokenizer.ggml.merges[" + std::to_string(i) + "] \"" + merges[i] +
                        "\" is not two tokens separated by one space");
    }
    pairs.emplace_back(merges[i].substr(0, space), merges[i].substr(space + 1));
  }
  return pairs;
}

// The pre-tokenizer named by tokenizer.ggml.pre (default gpt2).
void ReadPreTokenizer(const GgufFile& file, const std::string& path, BpeSpec& spec) {
  const std::string pre =
      file.Has("tokenizer.ggml.pre") ? file.GetString("tokenizer.ggml.pre") : "gpt2";
  auto known = KnownPreTokenizers().find(pre);
  if (known == KnownPreTokenizers().end()) {
    std::string names;
    for (const auto& [name, unused] : KnownPreTokenizers())
      names += (names.empty() ? "" : ", ") + name;
    throw FormatError(path + ": tokenizer.ggml.pre \"" + pre +
                      "\" is not a pre-tokenizer this "
                      "version knows (known: " +
                      names +
                      "); point --model at the model's "
                      "tokenizer.json instead");
  }
  spec.pre_name = pre;
  spec.pre.isolate_digits = known->second.isolate_digits;
  spec.pre.individual_digits = true;
  spec.pre.regex = known->second.regex;
  spec.pre.max_digits = known->second.max_digits;
  spec.ignore_merges = known->second.ignore_merges;
  spec.nfc = pre == "qwen2";  // Qwen2's tokenizer.json normalises to NFC
}

void ReadAddedTokens(const GgufFile& file, const std::string& path, BpeSpec& spec) {
  // Control and user-defined tokens are written in text as themselves.
  if (file.Has("tokenizer.ggml.token_type")) {
    const GgufArray& types = file.GetArray("tokenizer.ggml.token_type");
    if (types.size() != spec.vocab.size()) {
      throw FormatError(path + ": tokenizer.ggml.token_type has " + std::to_string(types.size()) +
                        " entries for " + std::to_string(spec.vocab.size()) + " tokens");
    }
    for (size_t id = 0; id < types.size(); ++id) {
      const int64_t type = AsInt(types[id]);
      if (type == kControl || type == kUserDefined) {
        spec.added.push_back({.content = spec.vocab[id],
                              .id = static_cast<int32_t>(id),
                              .special = type == kControl});
      }
    }
  }
}

void ReadSpecialIds(const GgufFile& file, const std::string& path, BpeSpec& spec) {
  auto id_or = [&](const char* key) -> std::optional<int32_t> {
    if (!file.Has(key)) return std::nullopt;
    const uint64_t id = file.GetUint(key);
    if (id >= spec.vocab.size()) {
      throw FormatError(path + ": " + key + " = " + std::to_string(id) +
                        " is outside the vocabulary of " + std::to_string(spec.vocab.size()) +
                        " tokens");
    }
    return static_cast<int32_t>(id);
  };
  spec.special_ids.bos = id_or("tokenizer.ggml.bos_token_id");
  spec.special_ids.eos = id_or("tokenizer.ggml.eos_token_id");
  spec.special_ids.unk = id_or("tokenizer.ggml.unknown_token_id");
  spec.special_ids.pad = id_or("tokenizer.ggml.padding_token_id");
  if (BoolOr(file, "tokenizer.ggml.add_bos_token", false) && spec.special_ids.bos) {
    spec.prefix_ids.push_back(*spec.special_ids.bos);
  }
  if (BoolOr(file, "tokenizer.ggml.add_eos_token", false) && spec.special_ids.eos) {
    spec.suffix_ids.push_back(*spec.special_ids.eos);
  }
}

}  // namespace

BpeSpec ReadGgufBpeSpec(const GgufFile& file, const std::string& path) {
  CheckBpeModel(file, path);
  BpeSpec spec;
  spec.source = path;
  spec.vocab = StringArray(file, "tokenizer.ggml.tokens", path);
  spec.merges = ReadMerges(file, path);
  ReadPreTokenizer(file, path, spec);
  ReadAddedTokens(file, path, spec);
  ReadSpecialIds(file, path, spec);
  return spec;
}

std::unique_ptr<BpeTokenizer> LoadGgufTokenizer(const GgufFile& file, const std::string& path) {
  return std::make_unique<BpeTokenizer>(ReadGgufBpeSpec(file, path));
}

}  // namespace diablo::model
