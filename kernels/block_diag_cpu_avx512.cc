// AVX-512 fp32 kernels for the block-diagonal ops (see block_diag_cpu_kernels.h
// for why they exist).  One register-tiled micro-kernel serves all three ops:
//   C[m, 0:Q] += sum_p a(m, p) * B[p, 0:Q]
// with a(m, p) read through two strides, so it covers both "rows times a
// block of A" (forward, input gradient) and "x^T dy" (adapter gradient).
// Compiled for AVX-512 through function attributes and only called after a
// runtime CPU check, so the binary still runs on any x86-64.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <vector>

#include "kernels/block_diag_cpu_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DIABLO_HAVE_AVX512_KERNELS 1
#include <immintrin.h>
#define DIABLO_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#endif

namespace diablo::kernels::cpu {
namespace {

std::atomic<Path> forced_path{Path::kAuto};

int64_t Span(int64_t size, int64_t start, int64_t block) {
  return std::clamp<int64_t>(size - start, 0, block);
}

}  // namespace

bool CpuHasAvx512() {
#ifdef DIABLO_HAVE_AVX512_KERNELS
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  return has;
#else
  return false;
#endif
}

void SetPathForTesting(Path path) { forced_path.store(path); }

Path ChoosePath(const BlockLayout& l) {
  const Path forced = forced_path.load();
  if (forced == Path::kBlas || !CpuHasAvx512()) return Path::kBlas;
  if (forced == Path::kAvx512) return Path::kAvx512;
  // A block of A must stay in L1 across a row tile; beyond ~32 KiB per block
  // BLAS's own cache blocking wins (measured: 256x256 blocks run at BLAS peak).
  return l.block_in * l.block_out <= 8192 ? Path::kAvx512 : Path::kBlas;
}

#ifdef DIABLO_HAVE_AVX512_KERNELS
namespace {

constexpr int kW = 16;  // floats per zmm register

// The output tile is MT rows x VT vectors in registers; the last vector is
// masked to the tile's true width, so partial blocks need no padding and
// nothing past a row's end is touched.
template <int MT, int VT>
DIABLO_AVX512 void Tile(int64_t P, const float* a, int64_t a_sm, int64_t a_sp, const float* b,
                        int64_t ldb, float* c, int64_t ldc, __mmask16 last) {
  // Fully unrolled so that acc lives in registers, not on the stack.
  __m512 acc[MT][VT];
#pragma GCC unroll 16
  for (int m = 0; m < MT; ++m) {
#pragma GCC unroll 4
    for (int v = 0; v < VT; ++v) acc[m][v] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < P; ++p) {
    __m512 bv[VT];
    const float* brow = b + p * ldb;
#pragma GCC unroll 4
    for (int v = 0; v < VT - 1; ++v) bv[v] = _mm512_loadu_ps(brow + v * kW);
    bv[VT - 1] = _mm512_maskz_loadu_ps(last, brow + (VT - 1) * kW);
    const float* acol = a + p * a_sp;
#pragma GCC unroll 16
    for (int m = 0; m < MT; ++m) {
      const __m512 av = _mm512_set1_ps(acol[m * a_sm]);
#pragma GCC unroll 4
      for (int v = 0; v < VT; ++v) acc[m][v] = _mm512_fmadd_ps(av, bv[v], acc[m][v]);
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MT; ++m) {
    float* crow = c + m * ldc;
#pragma GCC unroll 4
    for (int v = 0; v < VT - 1; ++v) {
      _mm512_storeu_ps(crow + v * kW, _mm512_add_ps(_mm512_loadu_ps(crow + v * kW), acc[m][v]));
    }
    float* tail = crow + (VT - 1) * kW;
    _mm512_mask_storeu_ps(tail, last,
                          _mm512_add_ps(_mm512_maskz_loadu_ps(last, tail), acc[m][VT - 1]));
  }
}

// Rows per tile for a tile VT vectors wide: about 24 accumulators, leaving
// registers for the B row and the broadcast.
constexpr int RowsFor(int vt) { return vt == 4 ? 6 : vt == 3 ? 8 : 12; }

// C[0:M, 0:Q] += a(0:M, 0:P) B[0:P, 0:Q] for any M and Q: column groups of up
// to four vectors, row tiles of RowsFor(VT), and a smaller tile for the rest.
template <int VT>
DIABLO_AVX512 void TileRows(int64_t M, int64_t P, const float* a, int64_t a_sm, int64_t a_sp,
                            const float* b, int64_t ldb, float* c, int64_t ldc, __mmask16 last) {
  constexpr int MT = RowsFor(VT);
  int64_t m = 0;
  for (; m + MT <= M; m += MT)
    Tile<MT, VT>(P, a + m * a_sm, a_sm, a_sp, b, ldb, c + m * ldc, ldc, last);
  const int64_t rest = M - m;
  a += m * a_sm;
  c += m * ldc;
  // Remainders dispatch to an exact-height tile so that tall-thin cases such
  // as a 9-row adapter gradient stay register-tiled.
  switch (rest) {
    case 0:
      break;
    case 1:
      Tile<1, VT>(P, a, a_sm, a_sp, b, ldb, c, ldc, last);
      break;
    case 2:
      Tile<2, VT>(P, a, a_sm, a_sp, b, ldb, c, ldc, last);
      break;
    case 3:
      Tile<3, VT>(P, a, a_sm, a_sp, b, ldb, c, ldc, last);
      break;
    case 4:
      Tile<4, VT>(P, a, a_sm, a_sp, b, ldb, c, ldc, last);
      break;
    case 5:
      Tile<5, VT>(P, a, a_sm, a_sp, b, ldb, c, ldc, last);
      break;
    default:
      if constexpr (MT > 6) {
        switch (rest) {
          case 6:
            Tile<6, VT>(P, a, a_sm, a_sp, b, ldb, c, ldc, last);
            break;
          case 7:
            Tile<7, VT>(P, a, a_sm, a_sp, b, ldb, c, ldc, last);
            break;
          case 8:
            Tile<8, VT>(P, a, a_sm, a_sp, b, ldb, c, ldc, last);
            break;
          case 9:
            Tile<9, VT>(P, a, a_sm, a_sp, b, ldb, c, ldc, last);
            break;
          case 10:
            Tile<10, VT>(P, a, a_sm, a_sp, b, ldb, c, ldc, last);
            break;
          default:
            Tile<11, VT>(P, a, a_sm, a_sp, b, ldb, c, ldc, last);
            break;
        }
      }
  }
}

DIABLO_AVX512 void Gemm(int64_t M, int64_t P, int64_t Q, const float* a, int64_t a_sm, int64_t a_sp,
                        const float* b, int64_t ldb, float* c, int64_t ldc) {
  for (int64_t q = 0; q < Q; q += 4 * kW) {
    const int64_t width = std::min<int64_t>(Q - q, 4 * kW);
    const int vt = static_cast<int>((width + kW - 1) / kW);
    const int tail = static_cast<int>(width - (vt - 1) * kW);
    const __mmask16 last = static_cast<__mmask16>((1u << tail) - 1u);
    switch (vt) {
      case 1:
        TileRows<1>(M, P, a, a_sm, a_sp, b + q, ldb, c + q, ldc, last);
        break;
      case 2:
        TileRows<2>(M, P, a, a_sm, a_sp, b + q, ldb, c + q, ldc, last);
        break;
      case 3:
        TileRows<3>(M, P, a, a_sm, a_sp, b + q, ldb, c + q, ldc, last);
        break;
      default:
        TileRows<4>(M, P, a, a_sm, a_sp, b + q, ldb, c + q, ldc, last);
        break;
    }
  }
}

// out[r, block n cols] += in[r, block n cols] B_n for every row and block;
// forward (in = x, B = A) and input gradient (in = dy, B = A^T) alike.
struct RowsTimesBlocks {
  int64_t blocks;
  int64_t in_size, in_block;    // columns of `in` and their block width
  int64_t out_size, out_block;  // columns of `out` and their block width
  const float* B;               // [blocks, in_block, out_block]
};

DIABLO_AVX512 void RunRowsTimesBlocks(const RowsTimesBlocks& op, int64_t rows, const float* in,
                                      int64_t ld_in, float* out, int64_t ld_out) {
  // Rows in small chunks, blocks inside: a block of B stays in L1 while the
  // chunk's rows pass through it, and only a dozen row streams are open at a
  // time, which the prefetchers follow (48 rows ran 2x slower on 64x64
  // blocks).  Chunks are also the unit of parallel work.
  constexpr int64_t kChunk = 12;
  at::parallel_for(0, (rows + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t r0 = chunk * kChunk, m = std::min(kChunk, rows - r0);
      for (int64_t n = 0; n < op.blocks; ++n) {
        const int64_t i0 = n * op.in_block, o0 = n * op.out_block;
        const int64_t p = Span(op.in_size, i0, op.in_block),
                      q = Span(op.out_size, o0, op.out_block);
        if (p == 0 || q == 0) continue;
        Gemm(m, p, q, in + r0 * ld_in + i0, ld_in, 1, op.B + n * op.in_block * op.out_block,
             op.out_block, out + r0 * ld_out + o0, ld_out);
      }
    }
  });
}

}  // namespace

void ForwardAvx512(int64_t rows, const float* x, int64_t ldx, const float* A, const BlockLayout& l,
                   float* y, int64_t ldy) {
  RunRowsTimesBlocks({l.blocks, l.in, l.block_in, l.out, l.block_out, A}, rows, x, ldx, y, ldy);
}

void BackwardInputAvx512(int64_t rows, const float* dy, int64_t ldy, const float* AT,
                         const BlockLayout& l, float* dx, int64_t ldx) {
  RunRowsTimesBlocks({l.blocks, l.out, l.block_out, l.in, l.block_in, AT}, rows, dy, ldy, dx, ldx);
}

void BackwardWeightAvx512(int64_t rows, const float* x, int64_t ldx, const float* dy, int64_t ldy,
                          const BlockLayout& l, float* dA) {
  // Row chunks outer, blocks inner: each chunk of x and dy (about 768 KiB)
  // comes from memory once and every block reads its columns from L2, where a
  // block-outer order re-streamed all rows per block.  Threads take ranges of
  // chunks and sum into private buffers (parameter-sized) added at the end.
  const int64_t chunk_rows = std::clamp<int64_t>((768 << 10) / (4 * (l.in + l.out)), 8, 256);
  const int64_t chunks = (rows + chunk_rows - 1) / chunk_rows;
  const int64_t block_size = l.block_in * l.block_out, size = l.blocks * block_size;
  // Vectors run along b_out.  When b_out is narrow and b_in wider (24 x 9 in
  // a down projection), computing dA_n^T instead fills more vector lanes and
  // broadcasts fewer values per row; it is transposed back at the end.
  const bool transposed = l.block_out < 16 && l.block_in > l.block_out;
  std::vector<std::vector<float>> partials(static_cast<size_t>(at::get_num_threads()));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    float* out = dA;
    if (begin != 0 || transposed) {
      auto& mine = partials.at(static_cast<size_t>(at::get_thread_num()));
      if (mine.empty()) mine.assign(static_cast<size_t>(size), 0.0f);
      out = mine.data();
    }
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t r0 = chunk * chunk_rows, m = std::min(chunk_rows, rows - r0);
      for (int64_t n = 0; n < l.blocks; ++n) {
        const int64_t i0 = n * l.block_in, o0 = n * l.block_out;
        const int64_t p = Span(l.in, i0, l.block_in), q = Span(l.out, o0, l.block_out);
        if (p == 0 || q == 0) continue;
        const float* xs = x + r0 * ldx + i0;
        const float* dys = dy + r0 * ldy + o0;
        if (transposed) {
          // C = dA_n^T [q x p], a(j, r) = dy[r, o0 + j], B rows = x[r, i0:].
          Gemm(q, m, p, dys, 1, ldy, xs, ldx, out + n * block_size, l.block_in);
        } else {
          // C = dA_n [p x q], a(k, r) = x[r, i0 + k], B rows = dy[r, o0:].
          Gemm(p, m, q, xs, 1, ldx, dys, ldy, out + n * block_size, l.block_out);
        }
      }
    }
  });
  for (const auto& partial : partials) {
    if (partial.empty()) continue;
    if (!transposed) {
      for (int64_t i = 0; i < size; ++i) dA[i] += partial[static_cast<size_t>(i)];
      continue;
    }
    for (int64_t n = 0; n < l.blocks; ++n) {
      const float* t = partial.data() + n * block_size;
      float* d = dA + n * block_size;
      for (int64_t k = 0; k < l.block_in; ++k) {
        for (int64_t j = 0; j < l.block_out; ++j) d[k * l.block_out + j] += t[j * l.block_in + k];
      }
    }
  }
}

#else  // no AVX-512 kernels in this build; ChoosePath never selects them.

namespace {
[[noreturn]] void NotBuilt() {
  throw std::logic_error(
      "the AVX-512 DiaBlo kernels are not part of this build (x86-64 GCC/Clang only)");
}
}  // namespace

void ForwardAvx512(int64_t, const float*, int64_t, const float*, const BlockLayout&, float*,
                   int64_t) {
  NotBuilt();
}
void BackwardInputAvx512(int64_t, const float*, int64_t, const float*, const BlockLayout&, float*,
                         int64_t) {
  NotBuilt();
}
void BackwardWeightAvx512(int64_t, const float*, int64_t, const float*, int64_t, const BlockLayout&,
                          float*) {
  NotBuilt();
}

#endif

}  // namespace diablo::kernels::cpu
