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

void ForwardInto(at::Tensor& y, const at::Tensor& x, const at::Tensor& A,
                 const BlockLayout& layout, Path path = Path::kAuto);
void BackwardInputInto(at::Tensor& dx, const at::Tensor& dy, const at::Tensor& A,
                       const BlockLayout& layout, Path path = Path::kAuto);
at::Tensor BackwardWeight(const at::Tensor& x, const at::Tensor& dy, const BlockLayout& layout,
                          Path path = Path::kAuto);

}  // namespace diablo::kernels::cuda
