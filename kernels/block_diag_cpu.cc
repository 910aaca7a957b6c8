// The block-diagonal ops of block_diag.h: the contract's checks
// (block_diag_contract.h), the CPU implementation (AVX-512 kernels or batched BLAS, both on
// the activations in place, never copies of them in fp32), and the hand-off
// to kernels/cuda for CUDA tensors.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/block_diag.h"
#include "kernels/block_diag_contract.h"
#include "kernels/block_diag_cpu_kernels.h"
#ifdef DIABLO_WITH_CUDA
#include "kernels/cuda_dispatch.h"
#endif

namespace diablo::kernels {
namespace {

[[noreturn, maybe_unused]] void NoCuda(const char* op) {
  throw std::runtime_error(std::string(op) +
                           ": got CUDA tensors, but this build of diablo was built without CUDA "
                           "(rebuild where nvcc is found, or move the tensors to the CPU)");
}

// The activations as fp32 rows [R, cols]: a view when x is fp32 and its
// leading dimensions flatten without a copy; bf16/fp16 are widened once.
at::Tensor FloatRows(const at::Tensor& t) {
  at::Tensor rows = t.reshape({-1, t.size(-1)});
  return rows.scalar_type() == at::kFloat ? rows : rows.to(at::kFloat);
}

// Rows the kernels can update in place: unit column stride and rows that do
// not overlap (an expanded tensor's rows would race).
bool RowsWritableInPlace(const at::Tensor& t) {
  if (t.dim() != 2) return t.is_contiguous();
  return t.stride(1) == 1 && (t.size(0) <= 1 || t.stride(0) >= t.size(1));
}

// An fp32 [R, cols] tensor that accumulates into `t`: `t` itself (as a view)
// when it is fp32 with writable rows, otherwise an fp32 copy that Commit()
// writes back, so bf16/fp16 outputs are summed in fp32 and rounded once.
class Accumulator {
 public:
  explicit Accumulator(at::Tensor& t) : target_(t) {
    if (t.scalar_type() == at::kFloat && RowsWritableInPlace(t)) {
      rows_ = t.dim() == 2 ? t : t.view({-1, t.size(-1)});
      aliased_ = true;
    } else {
      rows_ = t.reshape({-1, t.size(-1)}).to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
    }
  }
  at::Tensor& rows() { return rows_; }
  void Commit() {
    if (!aliased_) target_.copy_(rows_.view(target_.sizes()));
  }

 private:
  at::Tensor& target_;
  at::Tensor rows_;
  bool aliased_ = false;
};

// Blocks [0, FullBlocks) lie entirely inside both `in` and `out`; they run as
// one batched GEMM.  The rest (at most a few) are clipped and run one by one.
int64_t FullBlocks(const BlockLayout& l) {
  return std::min({l.blocks, l.in / l.block_in, l.out / l.block_out});
}

struct Span {
  int64_t i0, in_n, o0, out_n;
  bool empty() const { return in_n <= 0 || out_n <= 0; }
};

Span BlockSpan(const BlockLayout& l, int64_t n) {
  const int64_t i0 = n * l.block_in, o0 = n * l.block_out;
  return {i0, std::clamp<int64_t>(l.in - i0, 0, l.block_in), o0,
          std::clamp<int64_t>(l.out - o0, 0, l.block_out)};
}

// [R, cols] -> [nf, R, block]: block n of every row, as a strided view.
at::Tensor BlockView(const at::Tensor& rows, int64_t nf, int64_t block) {
  return rows.narrow(1, 0, nf * block).view({rows.size(0), nf, block}).transpose(0, 1);
}

at::Tensor AdapterBlock(const at::Tensor& A, int64_t n, const Span& s) {
  return A[n].narrow(0, 0, s.in_n).narrow(1, 0, s.out_n);
}

// The hand-written kernels read rows through a row stride only.
at::Tensor UnitColumnStride(const at::Tensor& rows) {
  return rows.size(1) <= 1 || rows.stride(1) == 1 ? rows : rows.contiguous();
}

void ForwardRows(at::Tensor& y, const at::Tensor& x, const at::Tensor& A, const BlockLayout& l) {
  if (cpu::ChoosePath(l) == cpu::Path::kAvx512) {
    const at::Tensor xr = UnitColumnStride(x), Ac = A.contiguous();
    cpu::ForwardAvx512(xr.size(0), xr.data_ptr<float>(), xr.stride(0), Ac.data_ptr<float>(), l,
                       y.data_ptr<float>(), y.stride(0));
    return;
  }
  const int64_t nf = FullBlocks(l);
  if (nf > 0) {
    at::Tensor yb = BlockView(y, nf, l.block_out);
    yb.baddbmm_(BlockView(x, nf, l.block_in), A.narrow(0, 0, nf));
  }
  for (int64_t n = nf; n < l.blocks; ++n) {
    const Span s = BlockSpan(l, n);
    if (s.empty()) continue;
    y.narrow(1, s.o0, s.out_n).addmm_(x.narrow(1, s.i0, s.in_n), AdapterBlock(A, n, s));
  }
}

void BackwardInputRows(at::Tensor& dx, const at::Tensor& dy, const at::Tensor& A,
                       const BlockLayout& l) {
  if (cpu::ChoosePath(l) == cpu::Path::kAvx512) {
    // A^T per block, packed once (parameter-sized), so its rows are contiguous.
    const at::Tensor dyr = UnitColumnStride(dy), AT = A.transpose(1, 2).contiguous();
    cpu::BackwardInputAvx512(dyr.size(0), dyr.data_ptr<float>(), dyr.stride(0),
                             AT.data_ptr<float>(), l, dx.data_ptr<float>(), dx.stride(0));
    return;
  }
  const int64_t nf = FullBlocks(l);
  if (nf > 0) {
    at::Tensor dxb = BlockView(dx, nf, l.block_in);
    dxb.baddbmm_(BlockView(dy, nf, l.block_out), A.narrow(0, 0, nf).transpose(1, 2));
  }
  for (int64_t n = nf; n < l.blocks; ++n) {
    const Span s = BlockSpan(l, n);
    if (s.empty()) continue;
    dx.narrow(1, s.i0, s.in_n).addmm_(dy.narrow(1, s.o0, s.out_n), AdapterBlock(A, n, s).t());
  }
}

at::Tensor BackwardWeightRows(const at::Tensor& x, const at::Tensor& dy, const BlockLayout& l) {
  // Padded input columns and dropped output columns get exactly zero gradient.
  at::Tensor dA = at::zeros({l.blocks, l.block_in, l.block_out}, x.options().dtype(at::kFloat));
  if (cpu::ChoosePath(l) == cpu::Path::kAvx512) {
    const at::Tensor xr = UnitColumnStride(x), dyr = UnitColumnStride(dy);
    cpu::BackwardWeightAvx512(xr.size(0), xr.data_ptr<float>(), xr.stride(0), dyr.data_ptr<float>(),
                              dyr.stride(0), l, dA.data_ptr<float>());
    return dA;
  }
  const int64_t nf = FullBlocks(l);
  if (nf > 0) {
    at::Tensor full = dA.narrow(0, 0, nf);
    at::bmm_out(full, BlockView(x, nf, l.block_in).transpose(1, 2), BlockView(dy, nf, l.block_out));
  }
  for (int64_t n = nf; n < l.blocks; ++n) {
    const Span s = BlockSpan(l, n);
    if (s.empty()) continue;
    AdapterBlock(dA, n, s).addmm_(x.narrow(1, s.i0, s.in_n).t(), dy.narrow(1, s.o0, s.out_n));
  }
  return dA;
}

}  // namespace

void BlockDiagForwardInto(at::Tensor& y, const at::Tensor& x, const at::Tensor& A,
                          const BlockLayout& layout) {
  constexpr const char* kOp = "BlockDiagForwardInto";
  contract::CheckApply(kOp, y, "y", x, "x", A, layout, /*transpose=*/false);
  at::NoGradGuard no_grad;  // a primitive: autograd lives in block_diag_autograd
  if (x.is_cuda()) {
#ifdef DIABLO_WITH_CUDA
    return cuda::ForwardInto(y, x, A, layout);
#else
    NoCuda(kOp);
#endif
  }
  if (x.numel() == 0) return;
  Accumulator acc(y);
  ForwardRows(acc.rows(), FloatRows(x), A, layout);
  acc.Commit();
}

void BlockDiagBackwardInputInto(at::Tensor& dx, const at::Tensor& dy, const at::Tensor& A,
                                const BlockLayout& layout) {
  constexpr const char* kOp = "BlockDiagBackwardInputInto";
  contract::CheckApply(kOp, dx, "dx", dy, "dy", A, layout, /*transpose=*/true);
  at::NoGradGuard no_grad;
  if (dy.is_cuda()) {
#ifdef DIABLO_WITH_CUDA
    return cuda::BackwardInputInto(dx, dy, A, layout);
#else
    NoCuda(kOp);
#endif
  }
  if (dy.numel() == 0) return;
  Accumulator acc(dx);
  BackwardInputRows(acc.rows(), FloatRows(dy), A, layout);
  acc.Commit();
}

at::Tensor BlockDiagBackwardWeight(const at::Tensor& x, const at::Tensor& dy,
                                   const BlockLayout& layout) {
  constexpr const char* kOp = "BlockDiagBackwardWeight";
  contract::CheckWeightGrad(kOp, x, dy, layout);
  at::NoGradGuard no_grad;
  if (x.is_cuda()) {
#ifdef DIABLO_WITH_CUDA
    return cuda::BackwardWeight(x, dy, layout);
#else
    NoCuda(kOp);
#endif
  }
  return BackwardWeightRows(FloatRows(x), FloatRows(dy), layout);
}

void MergeIntoWeight(at::Tensor& weight, const at::Tensor& A, const BlockLayout& layout,
                     double sign) {
  constexpr const char* kOp = "MergeIntoWeight";
  contract::CheckMerge(kOp, weight, A, layout);
  at::NoGradGuard no_grad;
  // Plain ATen ops on views, so this runs unchanged on any device.  A mixed
  // bf16/fp16 += fp32 add computes in fp32 and rounds once into W's dtype.
  const int64_t nf = FullBlocks(layout);
  if (nf > 0) {
    // The full diagonal blocks of W, W[n*bo + j, n*bi + k], form one strided
    // 3-D view [nf, bo, bi].
    const int64_t s0 = weight.stride(0), s1 = weight.stride(1);
    at::Tensor diag = weight.as_strided({nf, layout.block_out, layout.block_in},
                                        {layout.block_out * s0 + layout.block_in * s1, s0, s1},
                                        weight.storage_offset());
    diag.add_(A.narrow(0, 0, nf).transpose(1, 2), sign);
  }
  for (int64_t n = nf; n < layout.blocks; ++n) {
    const Span s = BlockSpan(layout, n);
    if (s.empty()) continue;
    weight.narrow(0, s.o0, s.out_n).narrow(1, s.i0, s.in_n).add_(AdapterBlock(A, n, s).t(), sign);
  }
}

}  // namespace diablo::kernels
