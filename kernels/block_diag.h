// Block-diagonal adapter operations of DiaBlo (DESIGN.md, "The method").
//
// For a linear layer with `in` inputs and `out` outputs and a requested block
// count N:  b_in = ceil(in / N), b_out = ceil(out / N),
// N_eff = max(ceil(in / b_in), ceil(out / b_out)), and the adapter A has shape
// [N_eff, b_in, b_out] (fp32).  Block n maps input columns [n*b_in, (n+1)*b_in)
// to output columns [n*b_out, (n+1)*b_out); columns past `in` read as zero and
// columns past `out` are dropped, exactly as if x were zero-padded to
// N_eff*b_in and the result truncated to `out`.
//
// All functions take activations of any leading shape [..., in] / [..., out]
// (flattened to rows internally, never copied when already row-contiguous),
// in fp32, bf16 or fp16, with A in fp32; accumulation is fp32.  CPU and CUDA
// tensors are both accepted; CUDA needs a build with nvcc.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace diablo::kernels {

struct BlockLayout {
  int64_t in = 0, out = 0;  // the layer's sizes
  int64_t blocks = 0;       // N_eff
  int64_t block_in = 0, block_out = 0;

  // The reference implementation's layout for `requested_blocks` (N).
  // Throws std::invalid_argument when a size or N is not positive.
  static BlockLayout For(int64_t in, int64_t out, int64_t requested_blocks);
  // Infers the layout from an adapter tensor's shape [N_eff, b_in, b_out] and
  // the layer's sizes; throws std::invalid_argument (with both shapes in the
  // message) when the adapter cannot belong to such a layer.
  static BlockLayout FromAdapterShape(int64_t in, int64_t out, at::IntArrayRef adapter_shape);
  int64_t parameters() const { return blocks * block_in * block_out; }
};

// y[..., :out] += blockdiag(x, A).  y is updated in place (it is usually the
// frozen base layer's output, so no second output tensor is allocated).
void BlockDiagForwardInto(at::Tensor& y, const at::Tensor& x, const at::Tensor& A,
                          const BlockLayout& layout);

// dx[..., :in] += dy · blockdiag(A)^T, in place.
void BlockDiagBackwardInputInto(at::Tensor& dx, const at::Tensor& dy, const at::Tensor& A,
                                const BlockLayout& layout);

// dA[n] = sum over all rows of x_n^T · dy_n; returns a new fp32 tensor shaped
// like A.
at::Tensor BlockDiagBackwardWeight(const at::Tensor& x, const at::Tensor& dy,
                                   const BlockLayout& layout);

// W[:out, :in] += blockdiag(A)^T (merge) or -= (unmerge, sign = -1), in W's
// dtype with the arithmetic in fp32.
void MergeIntoWeight(at::Tensor& weight, const at::Tensor& A, const BlockLayout& layout,
                     double sign = 1.0);

}  // namespace diablo::kernels
