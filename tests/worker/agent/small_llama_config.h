// A Llama config.json the memory estimate can read (no weights): the model
// of the agent's memory-cap tests, about 4M parameters.
#pragma once

#include <nlohmann/json.hpp>

namespace diablo::agent::testing {

inline nlohmann::json SmallLlamaConfig() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", 1000},
          {"hidden_size", 256},
          {"intermediate_size", 512},
          {"num_hidden_layers", 4},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 512},
          {"rms_norm_eps", 1e-5}};
}

}  // namespace diablo::agent::testing
