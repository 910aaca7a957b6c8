// The modules of a Llama-family model as the runtime builds them
// (worker/model/llama.h), derived from its config alone: dotted Hugging Face
// paths, kinds and sizes, so parameters can be counted without any weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/llama_config.h"

namespace diablo::estimate {

enum class ModuleKind {
  kContainer,  // holds other modules and no parameters of its own
  kLinear,     // weight [out, in] (+ bias [out])
  kEmbedding,  // weight [out = vocab, in = hidden]
  kNorm,       // RMSNorm weight [out]
};

struct ModuleShape {
  std::string path;  // "model.layers.0.self_attn.q_proj"
  ModuleKind kind = ModuleKind::kContainer;
  int64_t in = 0, out = 0;
  bool bias = false;

  // The module's own parameters (children not included).
  int64_t parameters() const;
  // The last path component ("q_proj").
  std::string name() const;
};

// Every module of LlamaForCausalLM in the order named_modules() lists them
// (depth-first, registration order), the root itself excluded: "model",
// "model.embed_tokens", "model.layers", "model.layers.0", ..., "model.norm",
// and "lm_head" unless the embeddings are tied.
std::vector<ModuleShape> LlamaModules(const model::LlamaConfig& config);

}  // namespace diablo::estimate
