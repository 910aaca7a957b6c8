// PackedEmbedding: row lookups and the tied head over a packed table.
#include "worker/model/packed_embedding.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

namespace diablo::model {

PackedEmbeddingImpl::PackedEmbeddingImpl(PackedBlocks blocks, at::ScalarType dtype)
    : blocks_(std::move(blocks)), dtype_(dtype) {
  ValidatePackedBlocks(blocks_, "PackedEmbedding");
  if (dtype_ != at::kFloat && dtype_ != at::kBFloat16 && dtype_ != at::kHalf) {
    throw std::invalid_argument(std::string("PackedEmbedding: dtype must be fp32, bf16 or fp16, "
                                            "got ") +
                                c10::toString(dtype_));
  }
  blocks_.data = register_buffer("qweight", blocks_.data);
}

at::Tensor PackedEmbeddingImpl::forward(const at::Tensor& ids) {
  return DequantizeRows(blocks_, ids, dtype_);
}

at::Tensor PackedEmbeddingImpl::project(const at::Tensor& hidden) {
  return PackedMatmul(hidden, blocks_);
}

void PackedEmbeddingImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  to(device, non_blocking);
  to(dtype, non_blocking);
}

void PackedEmbeddingImpl::to(torch::Dtype dtype, bool /*non_blocking*/) { dtype_ = dtype; }

void PackedEmbeddingImpl::to(torch::Device device, bool non_blocking) {
  blocks_.data.set_data(blocks_.data.to(at::TensorOptions().device(device), non_blocking));
}

void PackedEmbeddingImpl::pretty_print(std::ostream& stream) const {
  stream << "PackedEmbedding(" << blocks_.out << ", " << blocks_.in
         << ", type=" << TypeInfo(blocks_.type).name << ")";
}

int64_t PackedWeightElements(torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& m : module.modules(/*include_self=*/true)) {
    if (auto* linear = dynamic_cast<PackedLinearImpl*>(m.get()))
      total += linear->in_features() * linear->out_features();
    if (auto* embedding = dynamic_cast<PackedEmbeddingImpl*>(m.get()))
      total += embedding->num_embeddings() * embedding->embedding_dim();
  }
  return total;
}

}  // namespace diablo::model
