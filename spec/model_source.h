// Where an estimate's model comes from: a GGUF file, a Hugging Face model
// directory or its config.json.  Only the GGUF header or the config is read,
// never the weights, so this is cheap enough for the scheduler to call.
#pragma once

#include <cstdint>
#include <string>

#include "formats/llama_config.h"

namespace diablo::estimate {

struct ModelSource {
  std::string path;    // as given
  std::string format;  // "gguf" or "hf"
  model::LlamaConfig config;
  // GGUF only: bytes of all tensors as the file stores them (quantised);
  // 0 for a Hugging Face config.
  uint64_t stored_weight_bytes = 0;
};

// Reads the model's shape from `path`: a .gguf file, a directory holding
// config.json, or a config.json file itself.  Throws std::invalid_argument
// (missing path, unknown kind of file, bad config field) or
// model::FormatError (malformed GGUF), the message naming the file.
ModelSource ReadModelSource(const std::string& path);

}  // namespace diablo::estimate
