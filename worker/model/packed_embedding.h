// PackedEmbedding: a token embedding table kept in its GGUF blocks (Q4_0,
// Q4_1 or Q8_0).  A lookup dequantises only the rows of the tokens asked for,
// and with tied embeddings the LM head runs against the same blocks through
// PackedMatmul, so the fp32 table (vocab x hidden, the largest single weight
// of a small model) never exists in memory.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

#include "worker/model/packed_linear.h"

namespace diablo::model {

class PackedEmbeddingImpl : public torch::nn::Module {
 public:
  // `blocks` is the [vocab, hidden] table (std::invalid_argument if its type
  // cannot stay packed or its bytes disagree with the shape).  Lookups and the
  // head compute in `dtype` (fp32, bf16 or fp16), like a dense table of it.
  PackedEmbeddingImpl(PackedBlocks blocks, at::ScalarType dtype);

  // ids [...] (int64) -> [..., hidden] in dtype.  Frozen: no gradient.
  at::Tensor forward(const at::Tensor& ids);
  // The tied LM head: hidden [..., hidden] -> [..., vocab] in hidden's dtype,
  // differentiable in `hidden`.
  at::Tensor project(const at::Tensor& hidden);

  int64_t num_embeddings() const { return blocks_.out; }
  int64_t embedding_dim() const { return blocks_.in; }
  GgmlType type() const { return blocks_.type; }
  at::ScalarType dtype() const { return dtype_; }
  // The packed bytes, uint8 [vocab, row_bytes].
  const at::Tensor& packed() const { return blocks_.data; }

  // Casting moves the blocks but never converts their bytes; a dtype sets
  // the dtype lookups produce.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

  void pretty_print(std::ostream& stream) const override;

 private:
  PackedBlocks blocks_;
  at::ScalarType dtype_;
};

TORCH_MODULE(PackedEmbedding);

// The number of weight values held packed by `module` and its descendants
// (PackedLinear and PackedEmbedding): model size counts them like dense
// parameters.
int64_t PackedWeightElements(torch::nn::Module& module);

}  // namespace diablo::model
