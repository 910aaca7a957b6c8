// Small-block kernel for y += blockdiag(x, A) (forward) and
// dx += dy · blockdiag(A)^T (input gradient): the same computation with the
// roles of the two sides swapped and A read transposed.  One CTA owns 32 rows
// by 128 consecutive output columns, which span several blocks when blocks are
// narrow (9x24 blocks: ~6 per CTA), so loads and stores of the activations are
// coalesced row segments whatever the block size.
#include <algorithm>
#include <climits>
#include <string>

#include "kernels/cuda/block_diag_apply.cuh"
#include "kernels/cuda/element.cuh"

namespace diablo::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kCols = 128;                          // output columns per CTA
constexpr int kRowGroups = kThreads / kCols;        // threads per output column
constexpr int kRowsPerThread = 16;                  // accumulators per thread
constexpr int kRows = kRowGroups * kRowsPerThread;  // activation rows per CTA
// Row pitch of the staged slice of A, padded by one so that staging A^T (k
// fastest, stride kAPitch) writes to 32 different banks.
constexpr int kAPitch = kCols + 1;
// 48 KiB is what every architecture we build for grants without an opt-in;
// staying under it also leaves room for four CTAs per SM on sm_80/sm_90.
constexpr size_t kSharedBudget = 48 * 1024;

// "in" and "out" are the sides of this kernel: (x, y) for the forward pass,
// (dy, dx) for the input gradient.  Block n reads in-columns
// [n*in_block, (n+1)*in_block) and writes out-columns [n*out_block, ...).
struct ApplyParams {
  int64_t rows = 0;
  int64_t ld_in = 0, ld_out = 0;
  int in_width = 0, out_width = 0;
  int in_block = 0, out_block = 0;
  bool transpose = false;  // M_n = A[n]^T; A[n] is stored [out_block][in_block]
  int k_chunk = 0;         // rows of M_n staged per pass over the in-block
  int max_groups = 0;      // most blocks one window of kCols columns can touch
};

// out[r, c] += sum_k in[r, n*in_block + k] * M_n[k][c - n*out_block], n = c / out_block.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    BlockDiagApplyKernel(T* __restrict__ out, const T* __restrict__ in,
                         const float* __restrict__ adapter, const ApplyParams p) {
  extern __shared__ float shared[];
  float* s_m = shared;                         // [k_chunk][kAPitch]
  float* s_in = shared + p.k_chunk * kAPitch;  // [kRows][max_groups][k_chunk]
  const int in_pitch = p.max_groups * p.k_chunk;

  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int row_count = static_cast<int>(min(static_cast<int64_t>(kRows), p.rows - r0));
  const int c0 = blockIdx.y * kCols;
  const int c_end = min(c0 + kCols, p.out_width);
  const int n_lo = c0 / p.out_block;
  // Blocks that start past the input's last column see only zero padding, and
  // so do all later ones: nothing to add (uniform per CTA, before any barrier).
  if (static_cast<int64_t>(n_lo) * p.in_block >= p.in_width) return;
  const int groups = (c_end - 1) / p.out_block - n_lo + 1;  // <= p.max_groups

  const int col = threadIdx.x % kCols;
  const int row_group = threadIdx.x / kCols;
  const int c = c0 + col;
  const bool col_valid = c < c_end;
  const int g = col_valid ? c / p.out_block - n_lo : 0;  // block of c within the window

  float acc[kRowsPerThread];
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) acc[r] = 0.f;

  for (int k0 = 0; k0 < p.in_block; k0 += p.k_chunk) {
    const int kc = min(p.k_chunk, p.in_block - k0);
    // s_m[kk][cc] = M_n[k0 + kk][j] for window column cc (n, j from c0 + cc).
    // Consecutive threads walk A in its storage order (j fastest for A[n],
    // k fastest for A[n]^T) so the global reads stay coalesced.
    for (int e = threadIdx.x; e < kc * kCols; e += kThreads) {
      const int kk = p.transpose ? e % kc : e / kCols;
      const int cc = p.transpose ? e / kc : e % kCols;
      const int ce = c0 + cc;
      float v = 0.f;
      if (ce < c_end) {
        const int n = ce / p.out_block;
        const int j = ce - n * p.out_block;
        const int k = k0 + kk;
        const int64_t index = p.transpose
                                  ? (static_cast<int64_t>(n) * p.out_block + j) * p.in_block + k
                                  : (static_cast<int64_t>(n) * p.in_block + k) * p.out_block + j;
        v = adapter[index];
      }
      s_m[kk * kAPitch + cc] = v;
    }
    // s_in[r][gg][kk] = in[r0 + r, (n_lo + gg)*in_block + k0 + kk], zero past
    // the input's last column (the reference's zero padding) or last row.
    // When the whole in-block fits one pass, each row's reads are one
    // contiguous segment of groups*in_block elements.
    const int per_row = groups * kc;
    for (int e = threadIdx.x; e < kRows * per_row; e += kThreads) {
      const int r = e / per_row;
      const int rest = e - r * per_row;
      const int gg = rest / kc;
      const int kk = rest - gg * kc;
      const int64_t in_col = static_cast<int64_t>(n_lo + gg) * p.in_block + k0 + kk;
      float v = 0.f;
      if (r < row_count && in_col < p.in_width) v = LoadAsFloat(in + (r0 + r) * p.ld_in + in_col);
      s_in[r * in_pitch + gg * p.k_chunk + kk] = v;
    }
    __syncthreads();

    // A warp covers 32 consecutive columns of one row group: s_m reads are
    // consecutive (no conflicts), s_in reads touch at most a few addresses
    // (one per block in the warp) and are broadcast.
    const float* s_row = s_in + row_group * in_pitch + g * p.k_chunk;
    for (int kk = 0; kk < kc; ++kk) {
      const float m = s_m[kk * kAPitch + col];
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        acc[r] = fmaf(s_row[r * kRowGroups * in_pitch + kk], m, acc[r]);
      }
    }
    __syncthreads();
  }

  if (!col_valid) return;
  // This column's block reads only padding: leave y bit-for-bit untouched.
  if (static_cast<int64_t>(n_lo + g) * p.in_block >= p.in_width) return;
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    const int row = row_group + r * kRowGroups;
    if (row < row_count) {
      T* dst = out + (r0 + row) * p.ld_out + c;
      StoreFromFloat(dst, LoadAsFloat(dst) + acc[r]);
    }
  }
}

ApplyParams MakeParams(const BlockDims& dims, int64_t rows, int64_t ld_in, int64_t ld_out,
                       bool transpose) {
  ValidateBlockDims(dims);
  ApplyParams p;
  p.rows = rows;
  p.ld_in = ld_in;
  p.ld_out = ld_out;
  p.in_width = static_cast<int>(transpose ? dims.out : dims.in);
  p.out_width = static_cast<int>(transpose ? dims.in : dims.out);
  p.in_block = static_cast<int>(transpose ? dims.block_out : dims.block_in);
  p.out_block = static_cast<int>(transpose ? dims.block_in : dims.block_out);
  p.transpose = transpose;
  // A window of kCols columns starting anywhere touches at most
  // ceil((kCols-1)/out_block) + 1 blocks; (kCols-1)/out_block + 2 bounds it.
  p.max_groups = static_cast<int>(std::min<int64_t>(dims.blocks, (kCols - 1) / p.out_block + 2));
  // Shared memory per staged k: one row of s_m plus one value per row and block.
  const size_t bytes_per_k = sizeof(float) * (kAPitch + static_cast<size_t>(kRows) * p.max_groups);
  const int k_max = static_cast<int>(std::max<size_t>(1, kSharedBudget / bytes_per_k));
  // Equal passes rather than a full one and a sliver (64 -> 2 x 32, not 54 + 10).
  const int passes = (p.in_block + k_max - 1) / k_max;
  p.k_chunk = (p.in_block + passes - 1) / passes;
  return p;
}

size_t SharedBytes(const ApplyParams& p) {
  return sizeof(float) * (static_cast<size_t>(p.k_chunk) * kAPitch +
                          static_cast<size_t>(kRows) * p.max_groups * p.k_chunk);
}

template <typename T>
void LaunchApply(void* out, const void* in, const float* adapter, const ApplyParams& p,
                 cudaStream_t stream) {
  if (p.rows <= 0) return;
  const int64_t row_tiles = (p.rows + kRows - 1) / kRows;
  const int64_t col_tiles = (p.out_width + kCols - 1) / kCols;
  if (row_tiles > INT_MAX || col_tiles > 65535) {
    throw std::invalid_argument("diablo CUDA kernels: " + std::to_string(p.rows) + " rows x " +
                                std::to_string(p.out_width) +
                                " columns exceed the launch grid of the small-block kernel");
  }
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(col_tiles));
  BlockDiagApplyKernel<T><<<grid, kThreads, SharedBytes(p), stream>>>(
      static_cast<T*>(out), static_cast<const T*>(in), adapter, p);
  DIABLO_CUDA_CHECK_LAUNCH();
}

}  // namespace

void LaunchBlockDiagForward(ElementType type, void* y, int64_t ld_y, const void* x, int64_t ld_x,
                            int64_t rows, const float* adapter, const BlockDims& dims,
                            cudaStream_t stream) {
  const ApplyParams p = MakeParams(dims, rows, ld_x, ld_y, /*transpose=*/false);
  DispatchElementType(type,
                      [&](auto tag) { LaunchApply<decltype(tag)>(y, x, adapter, p, stream); });
}

void LaunchBlockDiagBackwardInput(ElementType type, void* dx, int64_t ld_dx, const void* dy,
                                  int64_t ld_dy, int64_t rows, const float* adapter,
                                  const BlockDims& dims, cudaStream_t stream) {
  const ApplyParams p = MakeParams(dims, rows, ld_dy, ld_dx, /*transpose=*/true);
  DispatchElementType(type,
                      [&](auto tag) { LaunchApply<decltype(tag)>(dx, dy, adapter, p, stream); });
}

}  // namespace diablo::kernels::cuda
