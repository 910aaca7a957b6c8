// LibTorch glue of the CUDA block-diagonal ops (kernels/cuda_dispatch.h):
// checks the ops' contract, flattens activations to row-strided
// matrices (without a copy whenever a view exists), then runs either the
// hand-written small-block kernels (kernels/cuda/*.cu) or batched GEMMs.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

#include "kernels/block_diag_contract.h"
#include "kernels/cuda/block_diag_apply.cuh"
#include "kernels/cuda/block_diag_weight_grad.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda_dispatch.h"

namespace diablo::kernels::cuda {
namespace {

// Path::kAuto.  A block of bi x bo weights costs bi*bo multiply-adds per row
// while the row moves bi + 2*bo activation elements (read x, read and write
// y).  Up to 32x32 = 1024 weights that is at most ~10.7 multiply-adds per
// element, ~5.3 per byte in bf16: at or below the balance point of fp32 CUDA
// cores against HBM (A100 ~5, H200 ~7, H100 ~10 FMA per byte), so the
// hand-written kernel, which reads every activation once in coalesced row
// segments, is bandwidth-bound and a GEMM cannot beat it; it also skips the
// per-call cast of A and the batched GEMM's padding of tiny blocks to 64- or
// 128-wide tiles.  Above that the work grows with bi*bo while the hand-written
// kernel is bound by fp32 FMAs and shared-memory loads, whereas tensor-core
// GEMMs (fp32 accumulation) keep the op bandwidth-bound: 64x64 blocks
// (4096x4096 at N=64) go to GEMM.  A block side under 16 leaves most of every
// tensor-core MMA (16x8x16 and up) empty, so thin blocks stay hand-written
// whatever their area.  bench/cuda/adapter_bench_cuda times both paths on the
// 9x24 and 64x64 shapes; adjust these two constants from its output.
constexpr int64_t kSmallBlockMaxWeights = 32 * 32;
constexpr int64_t kTensorCoreMinSide = 16;

bool UseSmallBlockKernel(const BlockLayout& layout, Path path) {
  switch (path) {
    case Path::kSmallBlockKernel:
      return true;
    case Path::kGemm:
      return false;
    case Path::kAuto:
      break;
  }
  return std::min(layout.block_in, layout.block_out) < kTensorCoreMinSide ||
         layout.block_in * layout.block_out <= kSmallBlockMaxWeights;
}

ElementType ElementTypeOf(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kBFloat16:
      return ElementType::kBFloat16;
    case at::kHalf:
      return ElementType::kFloat16;
    default:
      return ElementType::kFloat32;  // the contract admits nothing else
  }
}

// The contract (kernels/block_diag_contract.h) holds every rule the CPU
// path shares; what only this path needs is that the tensors are on a GPU.
void CheckOnCuda(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor, got one on ", t.device());
}

BlockDims DimsOf(const BlockLayout& layout) {
  BlockDims dims;
  dims.in = layout.in;
  dims.out = layout.out;
  dims.blocks = layout.blocks;
  dims.block_in = layout.block_in;
  dims.block_out = layout.block_out;
  ValidateBlockDims(dims);
  return dims;
}

cudaStream_t CurrentStream() { return at::cuda::getCurrentCUDAStream().stream(); }

// [rows, width] with unit column stride; a view of `t` unless its leading
// dimensions cannot be merged or its last dimension is strided.
at::Tensor InputRows(const at::Tensor& t, int64_t width) {
  at::Tensor rows = t.reshape({-1, width});
  return rows.stride(1) == 1 ? rows : rows.contiguous();
}

// The same for an output updated in place: when no view exists, the work
// happens on a contiguous copy that Commit() writes back.
class OutputRows {
 public:
  OutputRows(at::Tensor& target, int64_t width) : target_(target) {
    at::Tensor rows = target.reshape({-1, width});
    copied_ = !rows.is_alias_of(target) || rows.stride(1) != 1;
    rows_ = copied_ ? rows.contiguous() : rows;
  }
  at::Tensor& get() { return rows_; }
  void Commit() {
    if (copied_) target_.copy_(rows_.view(target_.sizes()));
  }

 private:
  at::Tensor& target_;
  at::Tensor rows_;
  bool copied_ = false;
};

// Blocks 0..count-1 of a [rows, width] matrix as a batch [count, rows, block]
// with batch stride `block`: the strided-batched GEMM reads it in place.
at::Tensor BlockBatch(const at::Tensor& rows, int64_t count, int64_t block) {
  return rows.as_strided({count, rows.size(0), block}, {block, rows.stride(0), 1});
}

// out[:, block n] += in[:, block n] · M_n with M_n = A[n] (forward) or A[n]^T
// (input gradient), A cast to the activation dtype for tensor cores (cuBLAS
// accumulates in fp32).  Blocks that are full on both sides go to one
// strided-batched GEMM; partial blocks sit at the end, and at most one of them
// has columns on both sides, so one small GEMM finishes the job.
void GemmApply(at::Tensor& out, const at::Tensor& in, const at::Tensor& adapter,
               const BlockLayout& layout, bool transpose) {
  const at::NoGradGuard no_grad;
  const int64_t in_block = transpose ? layout.block_out : layout.block_in;
  const int64_t out_block = transpose ? layout.block_in : layout.block_out;
  const int64_t in_width = transpose ? layout.out : layout.in;
  const int64_t out_width = transpose ? layout.in : layout.out;
  at::Tensor m = adapter.to(in.scalar_type());
  if (transpose) m = m.transpose(1, 2);  // [blocks, in_block, out_block]

  const int64_t full = std::min(in_width / in_block, out_width / out_block);
  if (full > 0) {
    at::Tensor out_batch = BlockBatch(out, full, out_block);
    out_batch.baddbmm_(BlockBatch(in, full, in_block), m.narrow(0, 0, full));
  }
  for (int64_t n = full; n < layout.blocks; ++n) {
    const int64_t in_n = std::min(in_block, in_width - n * in_block);
    const int64_t out_n = std::min(out_block, out_width - n * out_block);
    if (in_n <= 0 || out_n <= 0) continue;  // only padding on one side
    at::Tensor out_cols = out.narrow(1, n * out_block, out_n);
    out_cols.addmm_(in.narrow(1, n * in_block, in_n), m[n].narrow(0, 0, in_n).narrow(1, 0, out_n));
  }
}

// grad[n][:in_n, :out_n] = x_n^T · dy_n in fp32 (bf16/fp16 inputs, fp32
// output and accumulation), zero elsewhere; same split as GemmApply.
void GemmWeightGrad(at::Tensor& grad, const at::Tensor& x, const at::Tensor& dy,
                    const BlockLayout& layout) {
  const at::NoGradGuard no_grad;
  const bool fp32 = x.scalar_type() == at::kFloat;
  auto product = [&](const at::Tensor& a, const at::Tensor& b) {
    return fp32 ? at::mm(a, b) : at::mm(a, b, at::kFloat);
  };
  grad.zero_();
  const int64_t full = std::min(layout.in / layout.block_in, layout.out / layout.block_out);
  if (full > 0) {
    at::Tensor dst = grad.narrow(0, 0, full);
    const at::Tensor xt = BlockBatch(x, full, layout.block_in).transpose(1, 2);
    const at::Tensor d = BlockBatch(dy, full, layout.block_out);
    if (fp32) {
      at::bmm_out(dst, xt, d);
    } else {
      at::bmm_out(dst, xt, d, at::kFloat);
    }
  }
  for (int64_t n = full; n < layout.blocks; ++n) {
    const int64_t in_n = std::min(layout.block_in, layout.in - n * layout.block_in);
    const int64_t out_n = std::min(layout.block_out, layout.out - n * layout.block_out);
    if (in_n <= 0 || out_n <= 0) continue;
    grad[n]
        .narrow(0, 0, in_n)
        .narrow(1, 0, out_n)
        .copy_(product(x.narrow(1, n * layout.block_in, in_n).t(),
                       dy.narrow(1, n * layout.block_out, out_n)));
  }
}

// Forward and input gradient differ only in which side is which.
void ApplyInto(const char* op, at::Tensor& out, const char* out_name, const at::Tensor& in,
               const char* in_name, const at::Tensor& adapter, const BlockLayout& layout, Path path,
               bool transpose) {
  const int64_t in_width = transpose ? layout.out : layout.in;
  const int64_t out_width = transpose ? layout.in : layout.out;
  contract::CheckApply(op, out, out_name, in, in_name, adapter, layout, transpose);
  CheckOnCuda(op, in, in_name);
  const BlockDims dims = DimsOf(layout);
  if (in.numel() == 0) return;

  const c10::cuda::CUDAGuard device_guard(in.device());
  const at::Tensor in_rows = InputRows(in, in_width);
  OutputRows out_rows(out, out_width);
  const at::Tensor a = adapter.contiguous();
  if (UseSmallBlockKernel(layout, path)) {
    at::Tensor& o = out_rows.get();
    const auto launch = transpose ? LaunchBlockDiagBackwardInput : LaunchBlockDiagForward;
    launch(ElementTypeOf(in), o.mutable_data_ptr(), o.stride(0), in_rows.const_data_ptr(),
           in_rows.stride(0), in_rows.size(0), a.const_data_ptr<float>(), dims, CurrentStream());
  } else {
    GemmApply(out_rows.get(), in_rows, a, layout, transpose);
  }
  out_rows.Commit();
}

}  // namespace

void ForwardInto(at::Tensor& y, const at::Tensor& x, const at::Tensor& A, const BlockLayout& layout,
                 Path path) {
  ApplyInto("diablo::kernels::cuda::ForwardInto", y, "y", x, "x", A, layout, path,
            /*transpose=*/false);
}

void BackwardInputInto(at::Tensor& dx, const at::Tensor& dy, const at::Tensor& A,
                       const BlockLayout& layout, Path path) {
  ApplyInto("diablo::kernels::cuda::BackwardInputInto", dx, "dx", dy, "dy", A, layout, path,
            /*transpose=*/true);
}

at::Tensor BackwardWeight(const at::Tensor& x, const at::Tensor& dy, const BlockLayout& layout,
                          Path path) {
  constexpr const char* kOp = "diablo::kernels::cuda::BackwardWeight";
  contract::CheckWeightGrad(kOp, x, dy, layout);
  CheckOnCuda(kOp, x, "x");
  const BlockDims dims = DimsOf(layout);

  const c10::cuda::CUDAGuard device_guard(x.device());
  at::Tensor grad =
      at::empty({layout.blocks, layout.block_in, layout.block_out}, x.options().dtype(at::kFloat));
  if (x.numel() == 0) return grad.zero_();
  const at::Tensor x_rows = InputRows(x, layout.in);
  const at::Tensor dy_rows = InputRows(dy, layout.out);
  if (!UseSmallBlockKernel(layout, path)) {
    GemmWeightGrad(grad, x_rows, dy_rows, layout);
    return grad;
  }
  const int multiprocessors = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const WeightGradPlan plan = PlanBlockDiagWeightGrad(x_rows.size(0), dims, multiprocessors);
  // From the caching allocator on the current stream: freeing it when this
  // function returns is safe, later work on the stream is ordered after ours.
  at::Tensor workspace;
  if (plan.workspace_floats > 0) {
    workspace = at::empty({plan.workspace_floats}, x.options().dtype(at::kFloat));
  }
  LaunchBlockDiagWeightGrad(ElementTypeOf(x), x_rows.const_data_ptr(), x_rows.stride(0),
                            dy_rows.const_data_ptr(), dy_rows.stride(0), x_rows.size(0), dims, plan,
                            workspace.defined() ? workspace.mutable_data_ptr<float>() : nullptr,
                            grad.mutable_data_ptr<float>(), CurrentStream());
  return grad;
}

}  // namespace diablo::kernels::cuda
