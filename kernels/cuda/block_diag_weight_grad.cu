// Small-block kernel for the adapter gradient dA[n] = x_n^T · dy_n summed over
// all rows.  Blocks are tiny next to the row count (9x24 against 8192 tokens),
// so the rows are cut into chunks to fill the GPU; each CTA keeps its slice of
// dA in registers while streaming its chunk through shared memory, then
// writes one partial sum, and a second kernel adds the chunks in order.
#include <algorithm>
#include <climits>
#include <string>

#include "kernels/cuda/block_diag_weight_grad.cuh"
#include "kernels/cuda/element.cuh"

namespace diablo::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerThread = 16;   // dA rows accumulated by one thread
constexpr int kMaxRowsPerPass = 32;  // activation rows staged per pass
// Fewer rows per chunk would make the partial sums cost as much as the work.
constexpr int64_t kMinChunkRows = 128;
constexpr int64_t kCtasPerSm = 4;
constexpr size_t kSharedBudget = 48 * 1024;  // no opt-in needed on any target
constexpr int kSumThreads = 256;

struct GradParams {
  int64_t rows = 0, ld_x = 0, ld_dy = 0, chunk_rows = 0;
  int in = 0, out = 0, blocks = 0, block_in = 0, block_out = 0;
  int groups = 0, tile_in = 0, tile_out = 0, row_groups = 0, rows_per_pass = 0;
  int tiles = 0, tiles_out = 0;
};

// CTA (blockIdx.x -> block group and tile, blockIdx.y -> chunk of rows).
// Thread layout: column index col = (g, jj) over groups * tile_out columns,
// row_group over row_groups; the thread owns dA[n_lo+g][i0 + row_group + r*row_groups][j0 + jj].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    WeightGradKernel(float* __restrict__ partial, const T* __restrict__ x, const T* __restrict__ dy,
                     const GradParams p) {
  extern __shared__ float shared[];
  const int x_pitch = p.groups * p.tile_in;          // staged x values per row
  const int dy_pitch = p.groups * p.tile_out;        // staged dy values per row
  float* s_x = shared;                               // [rows_per_pass][x_pitch]
  float* s_dy = shared + p.rows_per_pass * x_pitch;  // [rows_per_pass][dy_pitch]

  const int tile = blockIdx.x % p.tiles;
  const int n_lo = (blockIdx.x / p.tiles) * p.groups;
  const int i0 = (tile / p.tiles_out) * p.tile_in;
  const int j0 = (tile % p.tiles_out) * p.tile_out;
  const int64_t r_begin = static_cast<int64_t>(blockIdx.y) * p.chunk_rows;
  const int64_t r_end = min(p.rows, r_begin + p.chunk_rows);

  const int col = threadIdx.x % dy_pitch;
  const int row_group = threadIdx.x / dy_pitch;
  const int g = col / p.tile_out;
  const int jj = col - g * p.tile_out;
  // Tile rows row_group, row_group + row_groups, ... below tile_in; the plan
  // guarantees at most kRowsPerThread of them.  Spare threads only stage.
  const int my_rows =
      row_group < p.row_groups ? (p.tile_in - row_group + p.row_groups - 1) / p.row_groups : 0;

  float acc[kRowsPerThread];
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) acc[r] = 0.f;

  for (int64_t t0 = r_begin; t0 < r_end; t0 += p.rows_per_pass) {
    const int tt = static_cast<int>(min(static_cast<int64_t>(p.rows_per_pass), r_end - t0));
    // Zero outside the block (last group, last tile) and past in / out: the
    // padding of the reference, which makes dA's padding exactly zero.
    for (int e = threadIdx.x; e < tt * x_pitch; e += kThreads) {
      const int t = e / x_pitch;
      const int rest = e - t * x_pitch;
      const int gg = rest / p.tile_in;
      const int i = i0 + rest - gg * p.tile_in;
      const int n = n_lo + gg;
      const int64_t column = static_cast<int64_t>(n) * p.block_in + i;
      float v = 0.f;
      if (n < p.blocks && i < p.block_in && column < p.in) {
        v = LoadAsFloat(x + (t0 + t) * p.ld_x + column);
      }
      s_x[e] = v;
    }
    for (int e = threadIdx.x; e < tt * dy_pitch; e += kThreads) {
      const int t = e / dy_pitch;
      const int rest = e - t * dy_pitch;
      const int gg = rest / p.tile_out;
      const int j = j0 + rest - gg * p.tile_out;
      const int n = n_lo + gg;
      const int64_t column = static_cast<int64_t>(n) * p.block_out + j;
      float v = 0.f;
      if (n < p.blocks && j < p.block_out && column < p.out) {
        v = LoadAsFloat(dy + (t0 + t) * p.ld_dy + column);
      }
      s_dy[e] = v;
    }
    __syncthreads();
    if (my_rows > 0) {
      // Per row: one dy value (consecutive across the warp) and my_rows x
      // values (a few distinct addresses per warp, broadcast).
      const float* sx = s_x + g * p.tile_in + row_group;
      const float* sd = s_dy + col;
      for (int t = 0; t < tt; ++t) {
        const float d = sd[t * dy_pitch];
        const float* sxt = sx + t * x_pitch;
#pragma unroll
        for (int r = 0; r < kRowsPerThread; ++r) {
          if (r < my_rows) acc[r] = fmaf(sxt[r * p.row_groups], d, acc[r]);
        }
      }
    }
    __syncthreads();
  }

  const int n = n_lo + g;
  const int j = j0 + jj;
  if (my_rows == 0 || n >= p.blocks || j >= p.block_out) return;
  const int64_t block_size = static_cast<int64_t>(p.block_in) * p.block_out;
  float* dst =
      partial + static_cast<int64_t>(blockIdx.y) * p.blocks * block_size + n * block_size + j;
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    const int i = i0 + row_group + r * p.row_groups;
    if (r < my_rows && i < p.block_in) dst[static_cast<int64_t>(i) * p.block_out] = acc[r];
  }
}

// grad[e] = sum over chunks c, in order, of partial[c][e].
__global__ void __launch_bounds__(kSumThreads)
    SumChunksKernel(float* __restrict__ grad, const float* __restrict__ partial, int64_t count,
                    int64_t chunks) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += stride) {
    float sum = 0.f;
    for (int64_t c = 0; c < chunks; ++c) sum += partial[c * count + e];
    grad[e] = sum;
  }
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T>
void LaunchTyped(const void* x, int64_t ld_x, const void* dy, int64_t ld_dy, int64_t rows,
                 const BlockDims& dims, const WeightGradPlan& plan, float* workspace, float* grad,
                 cudaStream_t stream) {
  GradParams p;
  p.rows = rows;
  p.ld_x = ld_x;
  p.ld_dy = ld_dy;
  p.chunk_rows = plan.chunk_rows;
  p.in = static_cast<int>(dims.in);
  p.out = static_cast<int>(dims.out);
  p.blocks = static_cast<int>(dims.blocks);
  p.block_in = static_cast<int>(dims.block_in);
  p.block_out = static_cast<int>(dims.block_out);
  p.groups = plan.groups;
  p.tile_in = plan.tile_in;
  p.tile_out = plan.tile_out;
  p.row_groups = plan.row_groups;
  p.rows_per_pass = plan.rows_per_pass;
  p.tiles = plan.tiles;
  p.tiles_out = plan.tiles_out;

  const int64_t count = dims.blocks * dims.block_in * dims.block_out;
  float* target = plan.chunks > 1 ? workspace : grad;
  const dim3 grid(static_cast<unsigned>(plan.block_groups) * static_cast<unsigned>(plan.tiles),
                  static_cast<unsigned>(plan.chunks));
  WeightGradKernel<T><<<grid, kThreads, plan.shared_bytes, stream>>>(
      target, static_cast<const T*>(x), static_cast<const T*>(dy), p);
  DIABLO_CUDA_CHECK_LAUNCH();
  if (plan.chunks > 1) {
    const int64_t sum_ctas = std::min<int64_t>(CeilDiv(count, kSumThreads), 65535);
    SumChunksKernel<<<static_cast<unsigned>(sum_ctas), kSumThreads, 0, stream>>>(
        grad, workspace, count, plan.chunks);
    DIABLO_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

WeightGradPlan PlanBlockDiagWeightGrad(int64_t rows, const BlockDims& dims, int multiprocessors) {
  ValidateBlockDims(dims);
  WeightGradPlan plan;
  // Columns of a block go across threads (coalesced dy reads and dA writes);
  // as many row groups as needed to cover the block's rows with at most
  // kRowsPerThread accumulators each; the remaining threads take further
  // blocks, which is what keeps 9x24 blocks from idling 95% of a CTA.
  plan.tile_out = static_cast<int>(std::min<int64_t>(dims.block_out, kThreads));
  plan.row_groups = static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>(kThreads / plan.tile_out, CeilDiv(dims.block_in, kRowsPerThread))));
  plan.tile_in =
      static_cast<int>(std::min<int64_t>(dims.block_in, int64_t{plan.row_groups} * kRowsPerThread));
  plan.groups = static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>(dims.blocks, kThreads / (plan.tile_out * plan.row_groups))));
  plan.tiles_out = static_cast<int>(CeilDiv(dims.block_out, plan.tile_out));
  const int64_t tiles = CeilDiv(dims.block_in, plan.tile_in) * plan.tiles_out;
  const int64_t block_groups = CeilDiv(dims.blocks, plan.groups);
  if (tiles * block_groups > INT_MAX) {
    throw std::invalid_argument("diablo CUDA kernels: adapter of " + std::to_string(dims.blocks) +
                                " blocks of " + std::to_string(dims.block_in) + "x" +
                                std::to_string(dims.block_out) +
                                " exceeds the launch grid of the gradient kernel");
  }
  plan.tiles = static_cast<int>(tiles);
  plan.block_groups = static_cast<int>(block_groups);

  // groups*(tile_in + tile_out) <= 4096 + 256 floats per row by construction,
  // so at least two rows fit the budget.
  const size_t bytes_per_row =
      sizeof(float) * static_cast<size_t>(plan.groups) * (plan.tile_in + plan.tile_out);
  plan.rows_per_pass =
      static_cast<int>(std::clamp<size_t>(kSharedBudget / bytes_per_row, 1, kMaxRowsPerPass));
  plan.shared_bytes = bytes_per_row * plan.rows_per_pass;

  if (rows <= 0) return plan;  // chunks == 0: the launcher only zeroes dA
  // Enough chunks for ~kCtasPerSm CTAs per SM, but never chunks so short that
  // writing partial sums outweighs the reduction they do.
  const int64_t ctas_per_chunk = tiles * block_groups;
  const int64_t wanted = CeilDiv(std::max(multiprocessors, 1) * kCtasPerSm, ctas_per_chunk);
  int64_t chunks = std::clamp<int64_t>(wanted, 1, CeilDiv(rows, kMinChunkRows));
  chunks = std::min<int64_t>(chunks, 65535);
  plan.chunk_rows = CeilDiv(CeilDiv(rows, chunks), plan.rows_per_pass) * plan.rows_per_pass;
  plan.chunks = CeilDiv(rows, plan.chunk_rows);
  plan.workspace_floats =
      plan.chunks > 1 ? plan.chunks * dims.blocks * dims.block_in * dims.block_out : 0;
  return plan;
}

void LaunchBlockDiagWeightGrad(ElementType type, const void* x, int64_t ld_x, const void* dy,
                               int64_t ld_dy, int64_t rows, const BlockDims& dims,
                               const WeightGradPlan& plan, float* workspace, float* grad,
                               cudaStream_t stream) {
  ValidateBlockDims(dims);
  const int64_t count = dims.blocks * dims.block_in * dims.block_out;
  if (rows <= 0 || plan.chunks == 0) {
    DIABLO_CUDA_CHECK(cudaMemsetAsync(grad, 0, sizeof(float) * count, stream));
    return;
  }
  if (plan.chunks > 1 && workspace == nullptr) {
    throw std::invalid_argument("diablo CUDA kernels: the gradient plan needs a workspace of " +
                                std::to_string(plan.workspace_floats) + " floats");
  }
  DispatchElementType(type, [&](auto tag) {
    LaunchTyped<decltype(tag)>(x, ld_x, dy, ld_dy, rows, dims, plan, workspace, grad, stream);
  });
}

}  // namespace diablo::kernels::cuda
