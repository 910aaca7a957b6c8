// Device-side conversions between the activation storage types and fp32, and
// the mapping from ElementType to them; included by the .cu files only.
// Loads and stores are scalar on purpose: strided views carry no alignment
// guarantee beyond one element, so no vector load is ever assumed safe.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/common.cuh"

namespace diablo::kernels::cuda {

__device__ __forceinline__ float LoadAsFloat(const float* p) { return *p; }
__device__ __forceinline__ float LoadAsFloat(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}
__device__ __forceinline__ float LoadAsFloat(const __half* p) { return __half2float(*p); }

// Round-to-nearest-even, as ATen's own casts do.
__device__ __forceinline__ void StoreFromFloat(float* p, float v) { *p = v; }
__device__ __forceinline__ void StoreFromFloat(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}
__device__ __forceinline__ void StoreFromFloat(__half* p, float v) { *p = __float2half_rn(v); }

// Calls fn(T{}) with T the device type of `type`, so a launcher is written once
// as a template and instantiated for the three activation types.
template <typename Fn>
void DispatchElementType(ElementType type, Fn&& fn) {
  switch (type) {
    case ElementType::kFloat32:
      fn(float{});
      return;
    case ElementType::kBFloat16:
      fn(__nv_bfloat16{});
      return;
    case ElementType::kFloat16:
      fn(__half{});
      return;
  }
  throw std::invalid_argument("diablo CUDA kernels: unknown activation element type");
}

}  // namespace diablo::kernels::cuda
