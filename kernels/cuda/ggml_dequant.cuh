// Launcher of the CUDA decoder for packed GGUF weights (Q8_0, Q4_0, Q4_1):
// the device side of worker/model/packed_linear.h.  Raw pointers and a stream
// only, like the other launchers here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace diablo::kernels::cuda {

// The block formats a packed weight may have (32 values per block).
enum class PackedFormat { kQ8_0, kQ4_0, kQ4_1 };

// Bytes of one block of `format`.
int64_t PackedBlockBytes(PackedFormat format);

// Decodes `values` values (a multiple of 32: whole rows of blocks, rows
// back to back) from `src` into `dst` of `out_type`, on `stream`.  Each value
// is d * q (Q8_0), d * (q - 8) (Q4_0) or d * q + m (Q4_1), rounded as two
// separate fp32 operations exactly like the CPU decoders, then stored in
// `out_type` with round-to-nearest-even.
void LaunchDequantizePacked(PackedFormat format, const uint8_t* src, int64_t values,
                            ElementType out_type, void* dst, cudaStream_t stream);

}  // namespace diablo::kernels::cuda
