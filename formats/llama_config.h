// The shape of a Llama-family model (Llama 2/3/3.1, Mistral, Qwen2,
// SmolLM/SmolLM2), read from a Hugging Face config.json or GGUF metadata.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace diablo::model {

class GgufFile;

struct RopeScaling {
  std::string type;  // "" (none) or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  std::string architecture = "LlamaForCausalLM";  // HF class name
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_attention_heads unless given
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2, or Llama with attention_bias
  bool o_bias = false;    // Llama with attention_bias
  bool mlp_bias = false;
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  std::string torch_dtype = "float32";  // storage dtype of the weights

  // Throws std::invalid_argument naming the field when the config is not a
  // model this runtime can build (unknown architecture, heads not dividing
  // the hidden size, ...).  `source` names the file in messages.
  void Validate(const std::string& source) const;
};

LlamaConfig ConfigFromHfJson(const nlohmann::json& config, const std::string& source);
LlamaConfig ConfigFromGguf(const GgufFile& file, const std::string& source);

}  // namespace diablo::model
