// Launchers of the hand-written small-block kernel that serves both the forward
// pass and the input gradient of the block-diagonal adapter.  Raw device
// pointers, row strides and a stream only (no LibTorch); dispatch.cc checks
// the tensors and calls these.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace diablo::kernels::cuda {

// y[r, n*bo + j] += sum_{i < in_n} x[r, n*bi + i] * A[n][i][j]   for j < out_n,
// where bi/bo are dims.block_in/block_out, in_n = min(bi, in - n*bi) and
// out_n = min(bo, out - n*bo): x zero-padded, the result truncated to `out`.
// Element (r, c) of x is x[r * ld_x + c], likewise for y.
// REQUIRES: x, y of `type` and adapter (fp32, contiguous [blocks, bi, bo]) on
// the stream's device; y does not overlap x; ld_x >= in and ld_y >= out unless
// rows <= 1.  Throws std::invalid_argument for sizes the kernel cannot index
// (columns >= 2^30) and std::runtime_error on a CUDA error.
void LaunchBlockDiagForward(ElementType type, void* y, int64_t ld_y, const void* x, int64_t ld_x,
                            int64_t rows, const float* adapter, const BlockDims& dims,
                            cudaStream_t stream);

// dx[r, n*bi + i] += sum_{j < out_n} dy[r, n*bo + j] * A[n][i][j]   for i < in_n.
// Same requirements as above with (dx, dy) in place of (y, x).
void LaunchBlockDiagBackwardInput(ElementType type, void* dx, int64_t ld_dx, const void* dy,
                                  int64_t ld_dy, int64_t rows, const float* adapter,
                                  const BlockDims& dims, cudaStream_t stream);

}  // namespace diablo::kernels::cuda
