// The CUDA side of kernels/block_diag.h, implemented in kernels/cuda/ only when
// the build has nvcc (DIABLO_WITH_CUDA).  The CPU entry points call these for
// CUDA tensors; shapes and dtypes are already checked by then.
#pragma once

#include <ATen/core/Tensor.h>

#include "kernels/block_diag.h"

namespace diablo::kernels::cuda {

// Which CUDA implementation to use.  kAuto picks by block shape: the
// hand-written kernels for small blocks, strided-batched GEMM for large ones.
enum class Path { kAuto, kSmallBlockKernel, kGemm };

void ForwardInto(at::Tensor& y, const at::Tensor& x, const at::Tensor& A, const BlockLayout& layout,
                 Path path = Path::kAuto);
void BackwardInputInto(at::Tensor& dx, const at::Tensor& dy, const at::Tensor& A,
                       const BlockLayout& layout, Path path = Path::kAuto);
at::Tensor BackwardWeight(const at::Tensor& x, const at::Tensor& dy, const BlockLayout& layout,
                          Path path = Path::kAuto);

// Packed GGUF weights (worker/model/packed_linear.h): decodes `packed`, uint8
// [rows, row_bytes] of blocks of `format` (0 = Q8_0, 1 = Q4_0, 2 = Q4_1),
// contiguous on a CUDA device, into `out`, contiguous [rows, in] fp32, bf16 or
// fp16 on the same device, on the current stream.  Values equal the CPU
// decoders' before the cast to out's dtype.
void DequantizePackedInto(at::Tensor& out, const at::Tensor& packed, int format);

}  // namespace diablo::kernels::cuda
