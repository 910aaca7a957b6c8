// The inverse of ConfigFromHfJson: a Hugging Face config.json for a
// LlamaConfig, in the form transformers' LlamaForCausalLM,
// MistralForCausalLM and Qwen2ForCausalLM (and vLLM) read.
#pragma once

#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>

#include "formats/llama_config.h"

namespace diablo::model {

// config.json for `config`, with config.torch_dtype as the weights' dtype.
// Throws std::invalid_argument when the architecture's config cannot express
// the model (q/k/v biases without an o_proj bias in a Llama model, biases in
// Mistral, ...).
nlohmann::ordered_json HfConfigJson(const LlamaConfig& config);

// The rope scaling under which `config` gives the rotary frequencies
// `inv_freq` ([head_dim / 2]): config.rope_scaling itself when they agree,
// else Llama 3's scaling fitted to them (how a GGUF file's rope_freqs tensor
// becomes config.json's rope_scaling).  Throws std::invalid_argument when no
// scaling config.json can describe reproduces the frequencies.
RopeScaling RopeScalingForFrequencies(const LlamaConfig& config, const at::Tensor& inv_freq);

}  // namespace diablo::model
