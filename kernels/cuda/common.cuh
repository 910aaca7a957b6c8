// Host-side vocabulary shared by the CUDA launchers and their LibTorch glue:
// the element types the kernels accept, the adapter's block geometry, and the
// check macro that turns a CUDA error into an exception naming file and line.
// Plain C++ (no device code, no LibTorch) so dispatch.cc can include it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace diablo::kernels::cuda {

// Storage type of the activations; the adapter and all accumulation are fp32.
enum class ElementType { kFloat32, kBFloat16, kFloat16 };

// Geometry of a block-diagonal adapter (see kernels/block_diag.h): A has shape
// [blocks, block_in, block_out]; block n maps input columns
// [n*block_in, (n+1)*block_in) ∩ [0, in) to output columns
// [n*block_out, (n+1)*block_out) ∩ [0, out).
struct BlockDims {
  int64_t in = 0, out = 0;
  int64_t blocks = 0;
  int64_t block_in = 0, block_out = 0;
};

[[noreturn]] inline void ThrowCudaError(cudaError_t error, const char* call, const char* file,
                                        int line) {
  throw std::runtime_error(std::string("CUDA error at ") + file + ":" + std::to_string(line) +
                           ": " + call + " returned " + cudaGetErrorName(error) + " (" +
                           cudaGetErrorString(error) + ")");
}

// The kernels index columns with 32-bit integers (rows, row strides and
// adapter offsets are 64-bit).  Rejects geometry that is inconsistent with the
// layout of kernels/block_diag.h or too wide for that.
inline void ValidateBlockDims(const BlockDims& d) {
  constexpr int64_t kMaxColumns = int64_t{1} << 30;
  auto in_range = [](int64_t v) { return v > 0 && v <= kMaxColumns; };
  // Each factor is at most 2^30 once in_range holds, so the products cannot overflow.
  const bool fits =
      in_range(d.in) && in_range(d.out) && in_range(d.blocks) && in_range(d.block_in) &&
      in_range(d.block_out) && d.blocks * d.block_in >= d.in && d.blocks * d.block_out >= d.out &&
      d.blocks * d.block_in <= 2 * kMaxColumns && d.blocks * d.block_out <= 2 * kMaxColumns;
  if (!fits) {
    throw std::invalid_argument(
        "diablo CUDA kernels: unsupported block geometry in=" + std::to_string(d.in) +
        " out=" + std::to_string(d.out) + " blocks=" + std::to_string(d.blocks) +
        " block=" + std::to_string(d.block_in) + "x" + std::to_string(d.block_out) +
        " (the blocks must cover in and out, and each size must stay at or below 2^30)");
  }
}

}  // namespace diablo::kernels::cuda

// Wraps every CUDA runtime call; throws std::runtime_error with file and line.
#define DIABLO_CUDA_CHECK(call)                                                               \
  do {                                                                                        \
    const cudaError_t diablo_cuda_error_ = (call);                                            \
    if (diablo_cuda_error_ != cudaSuccess) {                                                  \
      ::diablo::kernels::cuda::ThrowCudaError(diablo_cuda_error_, #call, __FILE__, __LINE__); \
    }                                                                                         \
  } while (0)

// After each <<<...>>>: a bad configuration (grid, shared memory) is reported
// here rather than as a mysterious failure of some later call.
#define DIABLO_CUDA_CHECK_LAUNCH() DIABLO_CUDA_CHECK(cudaGetLastError())
