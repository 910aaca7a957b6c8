// The one contract of the block-diagonal ops of block_diag.h: every shape,
// dtype, device and aliasing rule that either backend relies on.
//
// The public entry points (block_diag_cpu.cc) check it before choosing the
// CPU or the CUDA code, and the CUDA glue (kernels/cuda/dispatch.cc) checks
// it again for the callers that reach it directly (its tests and benchmark).
// The CPU code could accept more (mixed activation dtypes, an output that
// overlaps itself), but it must not: a CPU test has to fail wherever the CUDA
// path would throw, or CPU-only CI proves nothing about a GPU run.
//
// Every check throws std::invalid_argument naming the op, the operand and
// what it should be.
#pragma once

#include <ATen/core/Tensor.h>

#include "kernels/block_diag.h"

namespace diablo::kernels::contract {

// The layout was built by BlockLayout::For (or agrees with it).
void CheckLayout(const char* op, const BlockLayout& layout);

// out[..., :out_width] += in · blockdiag(A) (forward) or in · blockdiag(A)^T
// (input gradient, `transpose`).  in and out: fp32, bf16 or fp16, one dtype
// for both, the same leading shape, on A's device; out does not overlap in
// nor itself.  A: fp32 [N_eff, b_in, b_out].
void CheckApply(const char* op, const at::Tensor& out, const char* out_name, const at::Tensor& in,
                const char* in_name, const at::Tensor& A, const BlockLayout& layout,
                bool transpose);

// dA = Σ x_n^T · dy_n: x [..., in] and dy [..., out] of one float dtype, the
// same leading shape, one device.
void CheckWeightGrad(const char* op, const at::Tensor& x, const at::Tensor& dy,
                     const BlockLayout& layout);

// W [out, in] (any float dtype) += blockdiag(A)^T, on A's device.
void CheckMerge(const char* op, const at::Tensor& weight, const at::Tensor& A,
                const BlockLayout& layout);

}  // namespace diablo::kernels::contract
