// LibTorch glue of the packed-weight decoder (kernels/cuda_dispatch.h):
// checks the tensors, then launches kernels/cuda/ggml_dequant.cu on the
// current stream of the tensors' device.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/cuda/ggml_dequant.cuh"
#include "kernels/cuda_dispatch.h"

namespace diablo::kernels::cuda {

void DequantizePackedInto(at::Tensor& out, const at::Tensor& packed, int format) {
  TORCH_CHECK(format >= 0 && format <= 2, "DequantizePackedInto: unknown block format ", format);
  const auto f = static_cast<PackedFormat>(format);
  TORCH_CHECK(packed.is_cuda() && out.is_cuda() && packed.device() == out.device(),
              "DequantizePackedInto: the blocks (", packed.device(), ") and the output (",
              out.device(), ") must be on one CUDA device");
  TORCH_CHECK(
      packed.scalar_type() == at::kByte && packed.dim() == 2 && packed.is_contiguous(),
      "DequantizePackedInto: the blocks must be a contiguous uint8 [rows, row_bytes] tensor");
  TORCH_CHECK(out.dim() == 2 && out.is_contiguous() && out.size(0) == packed.size(0),
              "DequantizePackedInto: the output must be a contiguous [", packed.size(0),
              ", in] tensor, got ", out.sizes());
  TORCH_CHECK(out.size(1) % 32 == 0 && packed.size(1) == out.size(1) / 32 * PackedBlockBytes(f),
              "DequantizePackedInto: ", packed.size(1), " bytes a row do not hold ", out.size(1),
              " values in this format");
  ElementType type = ElementType::kFloat32;
  switch (out.scalar_type()) {
    case at::kFloat:
      break;
    case at::kBFloat16:
      type = ElementType::kBFloat16;
      break;
    case at::kHalf:
      type = ElementType::kFloat16;
      break;
    default:
      TORCH_CHECK(false, "DequantizePackedInto: the output must be fp32, bf16 or fp16");
  }
  // One thread per value in a 1-D grid of 256-thread blocks.
  TORCH_CHECK(out.numel() / 256 < (int64_t{1} << 31), "DequantizePackedInto: ", out.numel(),
              " values are too many for one launch; decode fewer rows at a time");
  const c10::cuda::CUDAGuard guard(out.device());
  LaunchDequantizePacked(f, packed.data_ptr<uint8_t>(), out.numel(), type, out.data_ptr(),
                         at::cuda::getCurrentCUDAStream());
}

}  // namespace diablo::kernels::cuda
