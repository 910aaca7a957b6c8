// Internal to kernels/: the hand-vectorised fp32 CPU kernels behind
// block_diag_cpu.cc, and the switch that picks them or the BLAS path.
//
// Why hand-written: a DiaBlo block is a GEMM with a tiny inner dimension
// (b_in = 9 for a 576-wide layer, 64 for 4096 with N = 64), where BLAS spends
// more time packing operands and streaming the strided output than
// multiplying.  These kernels read activations in place, keep A's block in
// L1 and an output tile in registers.  The BLAS path (batched GEMM on strided
// views) remains for CPUs without AVX-512 and for large blocks.
#pragma once

#include <cstdint>

#include "kernels/block_diag.h"

namespace diablo::kernels::cpu {

enum class Path { kAuto, kBlas, kAvx512 };

// Forces a path (tests and benchmarks compare them); kAuto restores the
// default: AVX-512 kernels when the CPU has them and the blocks are small
// enough, else BLAS.  Not thread-safe with concurrent ops.
void SetPathForTesting(Path path);
// The path an op with this layout will take now.
Path ChoosePath(const BlockLayout& layout);

bool CpuHasAvx512();

// fp32 rows with column stride 1; `ld*` are row strides in elements.  All
// accumulate into their output.
//   y[r, :out]  += blockdiag(x[r, :in], A)          A  [blocks, b_in, b_out]
//   dx[r, :in]  += dy[r, :out] blockdiag(A)^T       AT [blocks, b_out, b_in] (A transposed per
//   block) dA          += sum_r x[r]^T dy[r] per block     dA [blocks, b_in, b_out]
void ForwardAvx512(int64_t rows, const float* x, int64_t ldx, const float* A, const BlockLayout& l,
                   float* y, int64_t ldy);
void BackwardInputAvx512(int64_t rows, const float* dy, int64_t ldy, const float* AT,
                         const BlockLayout& l, float* dx, int64_t ldx);
void BackwardWeightAvx512(int64_t rows, const float* x, int64_t ldx, const float* dy, int64_t ldy,
                          const BlockLayout& l, float* dA);

}  // namespace diablo::kernels::cpu
