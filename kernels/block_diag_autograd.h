// Differentiable DiaBlo ops for LibTorch autograd, built on the primitives of
// block_diag.h.  The fused op runs the frozen base linear and the adapter
// together so the adapter adds into the base output and the base input
// gradient, with no second activation-sized tensor and no saved copy of x.
#pragma once

#include <ATen/core/Tensor.h>

#include "kernels/block_diag.h"

namespace diablo::kernels {

// y = x W^T + bias + blockdiag(dropout(x), A)      (DESIGN.md, "The method")
//
// x [..., in] in W's dtype (fp32, bf16 or fp16); weight [out, in] and the
// optional bias [out] are frozen: they must not require grad, and get no
// gradient.  A [blocks, block_in, block_out] is fp32 and receives dA.  Dropout
// (probability `dropout`, only when `training`) applies to the adapter's
// input alone; the base path always sees x unchanged.  Backward saves x, W, A
// and, with dropout, a one-byte-per-element mask; it computes dx only when x
// requires grad and dA only when A does.
at::Tensor BlockDiagLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& A, const BlockLayout& layout, double dropout = 0.0,
                           bool training = false);

// z = blockdiag(x, A): the adapter alone, [..., in] -> [..., out] in x's
// dtype, for callers whose base op is not a plain linear (quantised weights).
// Differentiable in x and A.
at::Tensor BlockDiagAdapter(const at::Tensor& x, const at::Tensor& A, const BlockLayout& layout);

}  // namespace diablo::kernels
