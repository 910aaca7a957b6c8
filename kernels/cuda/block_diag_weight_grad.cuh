// Launcher of the hand-written kernel for the adapter's gradient,
// dA[n] = sum over rows of x_n^T · dy_n, a reduction over all tokens.  Each CTA
// reduces one chunk of rows into registers and writes a partial sum; a second
// pass adds the partials in a fixed order, so the result is deterministic (no
// atomics).  Raw device pointers, row strides and a stream only (no LibTorch).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace diablo::kernels::cuda {

// How the work is cut: CTAs own `groups` consecutive blocks and a
// tile_in x tile_out tile of each, for one chunk of chunk_rows rows.
struct WeightGradPlan {
  int groups = 1;
  int tile_in = 1, tile_out = 1;
  int row_groups = 1;     // threads that share one column of a tile
  int rows_per_pass = 1;  // activation rows staged in shared memory at a time
  int tiles = 1, tiles_out = 1, block_groups = 1;
  int64_t chunk_rows = 0;
  int64_t chunks = 0;  // 0 when there are no rows
  size_t shared_bytes = 0;
  int64_t workspace_floats = 0;  // partial sums, needed only when chunks > 1
};

// Depends only on the sizes and the device's SM count (for enough CTAs to fill
// it), so results are bit-for-bit repeatable on a given GPU.
WeightGradPlan PlanBlockDiagWeightGrad(int64_t rows, const BlockDims& dims, int multiprocessors);

// grad[n][i][j] = sum_r x[r, n*bi + i] * dy[r, n*bo + j] for i < in_n, j < out_n,
// and 0 on the padding (i >= in_n or j >= out_n); grad is fp32 contiguous
// [blocks, bi, bo] and is fully overwritten (it need not be zeroed).
// REQUIRES: plan from PlanBlockDiagWeightGrad(rows, dims, ...); workspace holds
// plan.workspace_floats floats (may be null when that is 0); all pointers on
// the stream's device.
void LaunchBlockDiagWeightGrad(ElementType type, const void* x, int64_t ld_x, const void* dy,
                               int64_t ld_dy, int64_t rows, const BlockDims& dims,
                               const WeightGradPlan& plan, float* workspace, float* grad,
                               cudaStream_t stream);

}  // namespace diablo::kernels::cuda
