// One thread per value: a thread reads its block's scale (and minimum), one
// quant byte, and writes one value, so neighbouring threads read neighbouring
// bytes and write neighbouring values.  Decoding is bandwidth-bound; the
// matmul that follows it dominates.
#include "kernels/cuda/element.cuh"
#include "kernels/cuda/ggml_dequant.cuh"

namespace diablo::kernels::cuda {
namespace {

template <PackedFormat kFormat>
constexpr int kBlockBytes = kFormat == PackedFormat::kQ8_0   ? 34
                            : kFormat == PackedFormat::kQ4_0 ? 18
                                                             : 20;

// A little-endian fp16 at p (blocks are only 2-byte aligned).
__device__ __forceinline__ float LoadHalf(const uint8_t* p) {
  const unsigned short bits = static_cast<unsigned short>(p[0] | (p[1] << 8));
  return __half2float(__ushort_as_half(bits));
}

template <PackedFormat kFormat, typename T>
__global__ void DequantizeKernel(const uint8_t* __restrict__ src, int64_t values,
                                 T* __restrict__ dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= values) return;
  const uint8_t* block = src + (i / 32) * kBlockBytes<kFormat>;
  const int j = static_cast<int>(i % 32);
  const float d = LoadHalf(block);
  float v;
  if constexpr (kFormat == PackedFormat::kQ8_0) {
    v = __fmul_rn(d, static_cast<float>(static_cast<int8_t>(block[2 + j])));
  } else {
    // Byte j % 16 holds value j % 16 in its low nibble and j % 16 + 16 in its high one.
    constexpr int kQuants = kFormat == PackedFormat::kQ4_1 ? 4 : 2;
    const uint8_t byte = block[kQuants + (j & 15)];
    const int q = j < 16 ? (byte & 0x0f) : (byte >> 4);
    if constexpr (kFormat == PackedFormat::kQ4_0) {
      v = __fmul_rn(d, static_cast<float>(q - 8));
    } else {
      // __fmul_rn / __fadd_rn: no fused multiply-add, so the CPU's values exactly.
      v = __fadd_rn(__fmul_rn(d, static_cast<float>(q)), LoadHalf(block + 2));
    }
  }
  StoreFromFloat(dst + i, v);
}

template <PackedFormat kFormat>
void Launch(const uint8_t* src, int64_t values, ElementType out_type, void* dst,
            cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t grid = (values + kThreads - 1) / kThreads;
  DispatchElementType(out_type, [&](auto element) {
    using T = decltype(element);
    DequantizeKernel<kFormat, T>
        <<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(src, values, static_cast<T*>(dst));
  });
  DIABLO_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

int64_t PackedBlockBytes(PackedFormat format) {
  switch (format) {
    case PackedFormat::kQ8_0:
      return kBlockBytes<PackedFormat::kQ8_0>;
    case PackedFormat::kQ4_0:
      return kBlockBytes<PackedFormat::kQ4_0>;
    case PackedFormat::kQ4_1:
      return kBlockBytes<PackedFormat::kQ4_1>;
  }
  return 0;
}

void LaunchDequantizePacked(PackedFormat format, const uint8_t* src, int64_t values,
                            ElementType out_type, void* dst, cudaStream_t stream) {
  if (values <= 0) return;
  switch (format) {
    case PackedFormat::kQ8_0:
      Launch<PackedFormat::kQ8_0>(src, values, out_type, dst, stream);
      return;
    case PackedFormat::kQ4_0:
      Launch<PackedFormat::kQ4_0>(src, values, out_type, dst, stream);
      return;
    case PackedFormat::kQ4_1:
      Launch<PackedFormat::kQ4_1>(src, values, out_type, dst, stream);
      return;
  }
}

}  // namespace diablo::kernels::cuda
