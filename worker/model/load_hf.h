// Hugging Face model directories: config.json plus model.safetensors, or
// shards listed in model.safetensors.index.json.  Tensors are read through a
// memory mapping and copied once, into the tensors the model keeps.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "formats/llama_config.h"

namespace diablo::model {

struct HfCheckpoint {
  LlamaConfig config;
  std::map<std::string, at::Tensor> weights;  // HF names, the file's dtypes
};

// Throws FormatError / std::invalid_argument naming the file and the problem.
HfCheckpoint ReadHfCheckpoint(const std::string& directory);

}  // namespace diablo::model
