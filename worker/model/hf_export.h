// What a Hugging Face model directory needs besides the weights, for a model
// loaded from `source` (a Hugging Face directory or a GGUF file): config.json
// and the tokenizer / generation files, as name -> contents for
// SaveHfDirectory (save_hf.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "worker/model/llama.h"

namespace diablo::model {

// "float32", "bfloat16", "float16"; throws std::invalid_argument for others.
std::string TorchDtypeName(at::ScalarType dtype);
// The inverse; throws std::invalid_argument listing the accepted names.
at::ScalarType TorchDtypeFromName(const std::string& name);

// The tokenizer and generation files.  A directory's own files are copied
// (tokenizer.json, tokenizer_config.json, special_tokens_map.json,
// generation_config.json, tokenizer.model, chat_template.jinja, ... where
// present); a GGUF vocabulary is exported (tokenizer_export.h).  Cheap, so
// callers run it before loading weights: it throws FormatError when a GGUF
// vocabulary cannot be exported.
std::map<std::string, std::string> HfTokenizerFilesFor(const std::string& source);

// config.json text for `model`, loaded from `source`, with weights of
// `dtype`.  A directory's own config.json is kept (it describes the same
// architecture, with fields this runtime ignores) and only its dtype
// changed; for a GGUF file it is written from the model's config, with the
// rope scaling recovered from the model's rotary frequencies.
std::string HfConfigFileFor(const std::string& source, LlamaForCausalLMImpl& model,
                            at::ScalarType dtype);

// config.json text written from the model alone (the GGUF case above).
std::string HfConfigForModel(LlamaForCausalLMImpl& model, at::ScalarType dtype);

}  // namespace diablo::model
