// Folding adapters into the model for good: what `diablo merge` exports, and
// what serving without the adapter path needs.
#pragma once

#include <torch/nn/module.h>

namespace diablo::peft {

// Merges every injected adapter into its frozen weight (AdapterLayer::merge:
// fp32 arithmetic, one rounding to the weight's dtype) and puts a plain
// torch::nn::Linear holding the merged weight and the bias back in its
// place, so the module tree and its parameter names are the base model's
// again (model.layers.0.self_attn.q_proj.weight, no block_A / lora_A).
// Returns the number of layers merged; 0 when the model carries no adapters.
int MergeAndUnload(torch::nn::Module& root);

}  // namespace diablo::peft
