// PackedLinear: a frozen projection whose weight stays in its GGUF blocks
// (Q4_0, Q4_1 or Q8_0) and is dequantised for each use, the quantised base of
// the paper's section 4.4.  Memory holds the packed bytes only; forward and
// backward rebuild the dense weight a chunk of rows at a time into one
// per-thread buffer, so no dense copy of a whole weight ever exists.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "formats/gguf.h"
#include "worker/model/linear_layer.h"

namespace diablo::model {

// One weight matrix in ggml block form: `data` is uint8 [out, row_bytes],
// each row holding the `in` values of one output as consecutive blocks.
struct PackedBlocks {
  at::Tensor data;
  GgmlType type = GgmlType::kQ4_0;
  int64_t in = 0, out = 0;
};

// True for the block types PackedLinear keeps packed.
bool CanKeepPacked(GgmlType type);

// Throws std::invalid_argument, naming `what`, unless `blocks` has a type that
// can stay packed and contiguous uint8 data of exactly its [out, in] shape.
void ValidatePackedBlocks(const PackedBlocks& blocks, const std::string& what);

// The dense [out, in] weight in `dtype` (fp32, bf16 or fp16), on the blocks'
// device (the CPU decoders, or the CUDA kernels of kernels/cuda in a CUDA
// build).  Throws std::runtime_error on a device the build cannot decode on.
at::Tensor DequantizeBlocks(const PackedBlocks& blocks, at::ScalarType dtype);

// The dense rows `rows` (int64 indices of output rows, any shape) as
// [rows..., in] in `dtype`: an embedding lookup on a packed table.
at::Tensor DequantizeRows(const PackedBlocks& blocks, const at::Tensor& rows, at::ScalarType dtype);

// y = x W^T (+ bias) for x [..., in] (fp32, bf16 or fp16), W the blocks'
// dense weight, differentiable in x only.  W is rebuilt in chunks of output
// rows (PackedChunkElements values each) in forward and again in backward.
at::Tensor PackedMatmul(const at::Tensor& x, const PackedBlocks& blocks,
                        const std::optional<at::Tensor>& bias = std::nullopt);

// The most weight values one chunk dequantises at once (at least one row).
// Bounds the per-thread buffer: a 49k x 576 tied LM head is rebuilt in a few
// chunks instead of as one 113 MB tensor.  Tests lower it to reach the
// chunked path with small weights.
int64_t PackedChunkElements();
void SetPackedChunkElements(int64_t elements);

class PackedLinearImpl : public torch::nn::Module, public BaseLinearLayer {
 public:
  // Takes `blocks` (checked against type and shape; std::invalid_argument
  // otherwise) and the optional frozen `bias` [out] (undefined for none).
  PackedLinearImpl(PackedBlocks blocks, const at::Tensor& bias);

  // x [..., in] (fp32, bf16 or fp16) -> [..., out] in x's dtype, through
  // PackedMatmul; the weight never gets a gradient.
  at::Tensor forward(const at::Tensor& x) override;

  int64_t in_features() const override { return blocks_.in; }
  int64_t out_features() const override { return blocks_.out; }
  GgmlType type() const { return blocks_.type; }
  const at::Tensor& bias() const { return bias_; }
  // The packed bytes, uint8 [out, row_bytes].
  const at::Tensor& packed() const { return blocks_.data; }
  at::Tensor dense_weight(at::ScalarType dtype = at::kFloat) const;

  // Casting moves the blocks to the device but never converts their bytes.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

  void pretty_print(std::ostream& stream) const override;

 private:
  PackedBlocks blocks_;
  at::Tensor bias_;
};

TORCH_MODULE(PackedLinear);

}  // namespace diablo::model
