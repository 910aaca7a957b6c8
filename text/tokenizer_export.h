// A byte-level BPE vocabulary written out as Hugging Face tokenizer files, so
// that a model converted from GGUF carries a tokenizer that transformers'
// AutoTokenizer loads and that gives the ids ours gives.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "formats/gguf.h"
#include "text/bpe_tokenizer.h"

namespace diablo::model {

// File name -> contents.
using HfTokenizerFiles = std::map<std::string, std::string>;

struct TokenizerExportOptions {
  std::string chat_template;     // Jinja source; "" writes none
  int64_t model_max_length = 0;  // context length; 0 leaves it out
};

// tokenizer.json for `spec`: the BPE model, the added tokens, and the
// normaliser, pre-tokenizer, post-processor and decoder that reproduce ours.
// Throws FormatError (naming spec.source) when two ids share a spelling,
// which a JSON vocabulary cannot hold.
std::string TokenizerJson(const BpeSpec& spec);

// tokenizer.json, tokenizer_config.json (special tokens, chat template,
// tokenizer_class PreTrainedTokenizerFast so transformers uses tokenizer.json
// as written) and special_tokens_map.json.
HfTokenizerFiles ExportHfTokenizer(const BpeSpec& spec, const TokenizerExportOptions& options);

// The same for the vocabulary in a GGUF file's metadata, with its chat
// template and context length, plus generation_config.json (its BOS / EOS /
// padding ids).  Throws FormatError before anything is produced when the
// vocabulary cannot be exported: only byte-level BPE ("gpt2") can.
HfTokenizerFiles ExportGgufTokenizer(const GgufFile& file, const std::string& path);

}  // namespace diablo::model
