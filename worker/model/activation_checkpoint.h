// Gradient (activation) checkpointing for decoder layers: the forward pass
// keeps only each layer's input; backward recomputes the layer and
// back-propagates through it.  Memory for activations drops from every
// layer's intermediates to one layer's, for roughly one extra forward.
#pragma once

#include <ATen/core/Tensor.h>

#include "worker/model/llama.h"

namespace diablo::model {

// layer.forward(x, context) without keeping its intermediates; same value,
// same gradients (dropout masks are reproduced by restoring the generator
// state for the recomputation).  Not for use with a KV cache.
at::Tensor CheckpointedLayerForward(LlamaDecoderLayerImpl& layer, const at::Tensor& x,
                                    const AttentionContext& context, int64_t index);

}  // namespace diablo::model
