// Independent references for the DiaBlo/LoRA tests: the block-diagonal update
// built as a dense matrix with ordinary differentiable ATen ops (no kernel
// code involved), and the error measure every comparison uses.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

namespace diablo::testing {

// D = blockdiag(A[0], ..., A[N-1])[:in, :out], differentiable in A.
inline at::Tensor DenseBlockDiag(const at::Tensor& A, int64_t in, int64_t out) {
  std::vector<at::Tensor> blocks;
  for (int64_t n = 0; n < A.size(0); ++n) blocks.push_back(A[n]);
  return at::block_diag(blocks).narrow(0, 0, in).narrow(1, 0, out);
}

// max |actual - expected| / max |expected|, both widened to double.
inline double RelErr(const at::Tensor& actual, const at::Tensor& expected) {
  const at::Tensor a = actual.detach().to(at::kDouble), e = expected.detach().to(at::kDouble);
  const double scale = std::max(e.abs().max().item<double>(), 1e-30);
  return (a - e).abs().max().item<double>() / scale;
}

}  // namespace diablo::testing
