// PackedLinear: dequantisation from the blocks (parallel over rows with the
// plain C++ decoders of ggml_dequant) into a reused per-thread buffer, and the
// autograd function that rebuilds the weight in backward instead of saving it.
#include "worker/model/packed_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/ggml_dequant.h"

#ifdef DIABLO_WITH_CUDA
#include "kernels/cuda_dispatch.h"
#endif

namespace diablo::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// 4 Mi values: 16 MiB of fp32, larger than any projection of a small model and
// a few chunks for a 7B model's MLP or a large-vocabulary head.
std::atomic<int64_t> chunk_elements{int64_t{4} << 20};

int64_t RowBytes(GgmlType type, int64_t in) {
  const GgmlTypeInfo& info = TypeInfo(type);
  return in / info.block_elements * info.block_bytes;
}

#ifdef DIABLO_WITH_CUDA
constexpr bool kHaveCudaDecoder = true;
#else
constexpr bool kHaveCudaDecoder = false;
#endif

void CheckDevice(const PackedBlocks& blocks) {
  const at::Device device = blocks.data.device();
  if (device.is_cpu() || (device.is_cuda() && kHaveCudaDecoder)) return;
  throw std::runtime_error("PackedLinear: this build cannot dequantise packed weights on " +
                           device.str() +
                           (device.is_cuda() ? " (it was built without CUDA)" : std::string()) +
                           "; use base_weights: dense there");
}

#ifdef DIABLO_WITH_CUDA
int CudaFormat(GgmlType type) {
  switch (type) {
    case GgmlType::kQ8_0:
      return 0;
    case GgmlType::kQ4_0:
      return 1;
    default:
      return 2;  // kQ4_1: CanKeepPacked admits nothing else
  }
}
#endif

void CheckActivation(const at::Tensor& x, int64_t in) {
  const auto t = x.scalar_type();
  if (t != at::kFloat && t != at::kBFloat16 && t != at::kHalf) {
    throw std::invalid_argument(
        std::string("PackedLinear: input must be fp32, bf16 or fp16, got ") + c10::toString(t));
  }
  if (x.dim() < 1 || x.size(-1) != in) {
    throw std::invalid_argument("PackedLinear: input must have shape [..., " + std::to_string(in) +
                                "], got last dimension " +
                                std::to_string(x.dim() ? x.size(-1) : 0));
  }
}

// Decodes the `rows` rows of `src` (packed, row_bytes each) into dst
// [rows, in] fp32, a few rows per task: one row of a small model is only a
// few hundred blocks.
void DecodeRows(GgmlType type, int64_t in, const uint8_t* src, int64_t rows, float* dst) {
  const int64_t row_bytes = RowBytes(type, in);
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    DequantizeToFloat(type, std::span<const uint8_t>(src + begin * row_bytes, n * row_bytes),
                      static_cast<uint64_t>(n * in), std::span<float>(dst + begin * in, n * in));
  });
}

// A per-thread buffer of at least `elements` values of `dtype` on `device`,
// grown but never shrunk.  Packed matmuls decode into it instead of
// allocating: a fresh multi-MiB tensor per matmul costs page faults and, under
// glibc's adaptive mmap threshold, leaves the heap fragmented and larger than
// any live data.  On CUDA, reuse is ordered by the stream: the next decode is
// queued behind the matmul that read the buffer.
at::Tensor ThreadBuffer(int slot, int64_t elements, at::ScalarType dtype, at::Device device) {
  thread_local at::Tensor buffers[2];
  at::Tensor& b = buffers[slot];
  if (!b.defined() || b.scalar_type() != dtype || b.device() != device || b.numel() < elements)
    b = at::empty({elements}, at::TensorOptions().dtype(dtype).device(device));
  return b.narrow(0, 0, elements);
}

// Rows [first, first + rows) of the dense weight in `dtype`, as a view of this
// thread's buffers: valid until the next call on the thread.
at::Tensor WeightChunk(const PackedBlocks& blocks, int64_t first, int64_t rows,
                       at::ScalarType dtype) {
  const int64_t in = blocks.in;
  const at::Device device = blocks.data.device();
#ifdef DIABLO_WITH_CUDA
  if (device.is_cuda()) {
    at::Tensor w = ThreadBuffer(1, rows * in, dtype, device).view({rows, in});
    kernels::cuda::DequantizePackedInto(w, blocks.data.narrow(0, first, rows),
                                        CudaFormat(blocks.type));
    return w;
  }
#endif
  at::Tensor w = ThreadBuffer(0, rows * in, at::kFloat, device).view({rows, in});
  DecodeRows(blocks.type, in, blocks.data.data_ptr<uint8_t>() + first * RowBytes(blocks.type, in),
             rows, w.data_ptr<float>());
  if (dtype == at::kFloat) return w;
  return ThreadBuffer(1, rows * in, dtype, device).view({rows, in}).copy_(w);
}

int64_t RowsPerChunk(const PackedBlocks& blocks) {
  return std::clamp<int64_t>(chunk_elements.load() / blocks.in, 1, blocks.out);
}

// y = x W^T + b with W rebuilt from the blocks in both directions.  Only the
// packed bytes (an input, so free to keep) are saved: no dense weight outlives
// the matmul that needs it.
class PackedLinearFunction : public torch::autograd::Function<PackedLinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& data,
                            const std::optional<at::Tensor>& bias, int64_t type, int64_t in,
                            int64_t out) {
    const PackedBlocks blocks{data, static_cast<GgmlType>(type), in, out};
    ctx->save_for_backward({data});
    ctx->saved_data["type"] = type;
    ctx->saved_data["in"] = in;
    ctx->saved_data["out"] = out;
    const int64_t chunk = RowsPerChunk(blocks);
    if (chunk == out) return at::linear(x, WeightChunk(blocks, 0, out, x.scalar_type()), bias);
    // Chunk by chunk into column slices of y; BLAS writes a slice in place
    // (its rows are `out` apart).
    const at::Tensor x2 = x.reshape({-1, in});
    at::Tensor y = at::empty({x2.size(0), out}, x.options());
    for (int64_t first = 0; first < out; first += chunk) {
      const int64_t rows = std::min(chunk, out - first);
      at::Tensor slice = y.narrow(1, first, rows);
      at::mm_out(slice, x2, WeightChunk(blocks, first, rows, x.scalar_type()).t());
    }
    if (bias.has_value()) y.add_(*bias);
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = out;
    return y.view(shape);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor& dy = grad_outputs[0];
    at::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      const PackedBlocks blocks{ctx->get_saved_variables()[0],
                                static_cast<GgmlType>(ctx->saved_data["type"].toInt()),
                                ctx->saved_data["in"].toInt(), ctx->saved_data["out"].toInt()};
      // A graph of this backward (create_graph) would keep the chunk, which
      // lives in a reused buffer; nothing differentiates it, so build none.
      at::NoGradGuard no_grad;
      const int64_t in = blocks.in, out = blocks.out, chunk = RowsPerChunk(blocks);
      if (chunk == out) {
        dx = at::matmul(dy, WeightChunk(blocks, 0, out, dy.scalar_type()));
      } else {
        const at::Tensor dy2 = dy.reshape({-1, out});
        at::Tensor dx2 = at::zeros({dy2.size(0), in}, dy.options());
        for (int64_t first = 0; first < out; first += chunk) {
          const int64_t rows = std::min(chunk, out - first);
          dx2.addmm_(dy2.narrow(1, first, rows),
                     WeightChunk(blocks, first, rows, dy.scalar_type()));
        }
        std::vector<int64_t> shape(dy.sizes().begin(), dy.sizes().end());
        shape.back() = in;
        dx = dx2.view(shape);
      }
    }
    // The weight and bias are frozen: no gradient for either.
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool CanKeepPacked(GgmlType type) {
  return type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1 || type == GgmlType::kQ8_0;
}

int64_t PackedChunkElements() { return chunk_elements.load(); }

void SetPackedChunkElements(int64_t elements) {
  if (elements < 1) throw std::invalid_argument("SetPackedChunkElements: must be at least 1");
  chunk_elements.store(elements);
}

at::Tensor DequantizeBlocks(const PackedBlocks& blocks, at::ScalarType dtype) {
  CheckDevice(blocks);
#ifdef DIABLO_WITH_CUDA
  if (blocks.data.is_cuda()) {
    at::Tensor w = at::empty({blocks.out, blocks.in}, blocks.data.options().dtype(dtype));
    kernels::cuda::DequantizePackedInto(w, blocks.data, CudaFormat(blocks.type));
    return w;
  }
#endif
  at::Tensor w = at::empty({blocks.out, blocks.in}, at::kFloat);
  DecodeRows(blocks.type, blocks.in, blocks.data.data_ptr<uint8_t>(), blocks.out,
             w.data_ptr<float>());
  return dtype == at::kFloat ? w : w.to(dtype);
}

at::Tensor DequantizeRows(const PackedBlocks& blocks, const at::Tensor& rows,
                          at::ScalarType dtype) {
  CheckDevice(blocks);
  // index_select checks the indices against the table (an out-of-range token
  // id is an error, never a read past the end).
  const at::Tensor picked = blocks.data.index_select(0, rows.reshape({-1}).to(at::kLong));
  std::vector<int64_t> shape(rows.sizes().begin(), rows.sizes().end());
  shape.push_back(blocks.in);
  return DequantizeBlocks({picked, blocks.type, blocks.in, picked.size(0)}, dtype).view(shape);
}

at::Tensor PackedMatmul(const at::Tensor& x, const PackedBlocks& blocks,
                        const std::optional<at::Tensor>& bias) {
  CheckActivation(x, blocks.in);
  CheckDevice(blocks);
  if (x.device() != blocks.data.device()) {
    throw std::invalid_argument("PackedLinear: input on " + x.device().str() +
                                " but the packed weight on " + blocks.data.device().str());
  }
  return PackedLinearFunction::apply(x, blocks.data, bias, static_cast<int64_t>(blocks.type),
                                     blocks.in, blocks.out);
}

void ValidatePackedBlocks(const PackedBlocks& blocks, const std::string& what) {
  if (!CanKeepPacked(blocks.type)) {
    throw std::invalid_argument(what + ": type " + TypeInfo(blocks.type).name +
                                " cannot stay packed (Q4_0, Q4_1 and Q8_0 can)");
  }
  const GgmlTypeInfo& info = TypeInfo(blocks.type);
  if (blocks.in <= 0 || blocks.out <= 0 || blocks.in % info.block_elements != 0) {
    throw std::invalid_argument(what + ": [out, in] = [" + std::to_string(blocks.out) + ", " +
                                std::to_string(blocks.in) + "] needs in a multiple of " +
                                std::to_string(info.block_elements));
  }
  const at::Tensor& d = blocks.data;
  if (!d.defined() || d.scalar_type() != at::kByte || d.dim() != 2 || d.size(0) != blocks.out ||
      d.size(1) != RowBytes(blocks.type, blocks.in) || !d.is_contiguous()) {
    throw std::invalid_argument(what + ": data must be a contiguous uint8 tensor [" +
                                std::to_string(blocks.out) + ", " +
                                std::to_string(RowBytes(blocks.type, blocks.in)) + "]");
  }
}

PackedLinearImpl::PackedLinearImpl(PackedBlocks blocks, const at::Tensor& bias)
    : blocks_(std::move(blocks)) {
  ValidatePackedBlocks(blocks_, "PackedLinear");
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != blocks_.out)) {
    throw std::invalid_argument("PackedLinear: bias must have shape [" +
                                std::to_string(blocks_.out) + "]");
  }
  blocks_.data = register_buffer("qweight", blocks_.data);
  if (bias.defined()) bias_ = register_parameter("bias", bias.detach(), /*requires_grad=*/false);
}

at::Tensor PackedLinearImpl::forward(const at::Tensor& x) {
  std::optional<at::Tensor> bias;
  if (bias_.defined())
    bias = bias_.scalar_type() == x.scalar_type() ? bias_ : bias_.to(x.scalar_type());
  return PackedMatmul(x, blocks_, bias);
}

at::Tensor PackedLinearImpl::dense_weight(at::ScalarType dtype) const {
  return DequantizeBlocks(blocks_, dtype);
}

void PackedLinearImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  blocks_.data.set_data(blocks_.data.to(at::TensorOptions().device(device), non_blocking));
  if (bias_.defined()) bias_.set_data(bias_.to(device, dtype, non_blocking));
}

void PackedLinearImpl::to(torch::Dtype dtype, bool non_blocking) {
  if (bias_.defined()) bias_.set_data(bias_.to(dtype, non_blocking));
}

void PackedLinearImpl::to(torch::Device device, bool non_blocking) {
  blocks_.data.set_data(blocks_.data.to(at::TensorOptions().device(device), non_blocking));
  if (bias_.defined()) bias_.set_data(bias_.to(at::TensorOptions().device(device), non_blocking));
}

void PackedLinearImpl::pretty_print(std::ostream& stream) const {
  stream << "PackedLinear(in=" << blocks_.in << ", out=" << blocks_.out
         << ", type=" << TypeInfo(blocks_.type).name
         << ", bias=" << (bias_.defined() ? "true" : "false") << ")";
}

}  // namespace diablo::model
