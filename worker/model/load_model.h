// Loading a model users already have: a GGUF file, or a Hugging Face directory
// (config.json + model.safetensors or sharded *.safetensors with
// model.safetensors.index.json).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "worker/model/llama.h"

namespace diablo::model {

struct LoadOptions {
  // Dtype of the frozen weights in memory: kFloat, kBFloat16 or kHalf.
  // Quantised GGUF weights are dequantised to it.
  at::ScalarType dtype = at::kFloat;
  // GGUF only: projections, the embedding table and an untied lm_head stored
  // as Q4_0, Q4_1 or Q8_0 stay packed (PackedLinear, PackedEmbedding,
  // dequantised per use) instead of being expanded to `dtype`; norms and other
  // types are still dequantised.  Such a model can be fine-tuned with
  // adapters but not merged or fully trained.  A file with nothing to keep
  // packed is refused (std::invalid_argument) before any weight is read.
  bool keep_quantized = false;
};

struct LoadedModel {
  LlamaForCausalLM model{nullptr};
  std::string source;  // the path it came from
  std::string format;  // "gguf" or "hf"
  // What LoadOptions::keep_quantized kept packed: linear layers (projections
  // and an untied lm_head), and whether the embedding table.
  int64_t packed_layers = 0;
  bool packed_embeddings = false;
};

// Loads the model at `path` (a .gguf file or a directory).  Throws FormatError
// or std::invalid_argument with the file and the problem.
LoadedModel LoadModel(const std::string& path, const LoadOptions& options = {});

// How AssignWeights may use the given tensors.
enum class WeightSource {
  kOwned,     // fresh tensors nobody else holds: adopted as they are when the dtype fits
  kReadOnly,  // views of a read-only file mapping: always copied
};

// Puts named tensors into the model's parameters (HF names).  Every
// parameter must be given exactly once with its shape; extra names are errors
// too, with a hint that the file may be for another model.
void AssignWeights(LlamaForCausalLMImpl& model, std::map<std::string, at::Tensor> weights,
                   const std::string& source, at::ScalarType dtype, WeightSource kind);

}  // namespace diablo::model
