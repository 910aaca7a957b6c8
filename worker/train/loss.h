// The causal-LM loss on the tokens that are targets: the model's final hidden
// states are gathered at the positions before each target, and only those go
// through the LM head and cross-entropy (prompts are often half the tokens,
// and the head is the widest matrix).  Shared by training and evaluation.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "text/dataset.h"
#include "worker/model/llama.h"

namespace diablo::train {

// One micro-batch: token ids [batch, longest] right-padded with `pad`
// (causal attention never lets a real token see the padding after it), the
// flat positions whose next token is a target, and those targets.
struct MicroBatch {
  at::Tensor ids, positions, targets;
};

MicroBatch Collate(const Dataset& data, const std::vector<int64_t>& indices, int32_t pad,
                   at::Device device);

// Summed cross-entropy over the batch's targets (fp32 scalar).
at::Tensor LossSum(model::LlamaForCausalLMImpl& model, const MicroBatch& batch);

// Targets and tokens of the listed examples.
int64_t SumLabels(const Dataset& data, const std::vector<int64_t>& indices);
int64_t SumTokens(const Dataset& data, const std::vector<int64_t>& indices);

}  // namespace diablo::train
