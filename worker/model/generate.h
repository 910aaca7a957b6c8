// Text generation with a KV cache: greedy or sampled (temperature, top-k,
// top-p), stopping on end-of-sequence ids, stop strings or a token budget,
// for one prompt or a batch of prompts (left-padded together).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "text/tokenizer.h"
#include "worker/model/llama.h"

namespace diablo::model {

struct GenerationOptions {
  int64_t max_new_tokens = 128;
  double temperature = 0.0;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  uint64_t seed = 0;
  std::vector<int64_t> stop_ids;  // e.g. the model's EOS; generation stops after emitting one
  // Stop strings are checked on decoded text by the caller-supplied decoder.
  std::vector<std::string> stop_strings;
  std::function<std::string(const std::vector<int64_t>&)> decode;
};

struct Generation {
  std::vector<int64_t>
      tokens;               // new tokens only (a stop id is included, a stop string's tokens too)
  std::string stop_reason;  // "eos", "stop_string" or "length"
};

// The ids a chat model ends its turn with: the tokenizer's EOS and the chat
// families' end-of-turn markers it knows (<|im_end|>, <|eot_id|>, ...).
std::vector<int64_t> EndOfTurnIds(const Tokenizer& tokenizer);

// Generates for each prompt (token ids, no padding).  Throws
// std::invalid_argument for empty prompts or impossible options.
std::vector<Generation> Generate(LlamaForCausalLMImpl& model,
                                 const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerationOptions& options);

}  // namespace diablo::model
