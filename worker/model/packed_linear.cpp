// PackedLinear: dequantisation of whole weights from their blocks (parallel
// over rows with the plain C++ decoders of ggml_dequant), and the autograd
// function that recomputes the weight in backward instead of saving it.
#include "worker/model/packed_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <optional>
#include <span>
#include <stdexcept>
#include <string>

#include "worker/model/ggml_dequant.h"

namespace diablo::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

int64_t RowBytes(GgmlType type, int64_t in) {
  const GgmlTypeInfo& info = TypeInfo(type);
  return in / info.block_elements * info.block_bytes;
}

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

// y = x W^T + b with W rebuilt from the blocks in both directions.  Only the
// packed bytes (an input, so free to keep) are saved: no dense weight outlives
// the matmul that needs it.
class PackedLinearFunction : public torch::autograd::Function<PackedLinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& data,
                            const std::optional<at::Tensor>& bias, int64_t type, int64_t in,
                            int64_t out) {
    const PackedBlocks blocks{data, static_cast<GgmlType>(type), in, out};
    at::Tensor y = at::linear(x, DequantizeBlocks(blocks, x.scalar_type()), bias);
    ctx->save_for_backward({data});
    ctx->saved_data["type"] = type;
    ctx->saved_data["in"] = in;
    ctx->saved_data["out"] = out;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor& dy = grad_outputs[0];
    at::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      const PackedBlocks blocks{ctx->get_saved_variables()[0],
                                static_cast<GgmlType>(ctx->saved_data["type"].toInt()),
                                ctx->saved_data["in"].toInt(), ctx->saved_data["out"].toInt()};
      dx = at::matmul(dy, DequantizeBlocks(blocks, dy.scalar_type()));
    }
    // The weight and bias are frozen: no gradient for either.
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool CanKeepPacked(GgmlType type) {
  return type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1 || type == GgmlType::kQ8_0;
}

at::Tensor DequantizeBlocks(const PackedBlocks& blocks, at::ScalarType dtype) {
  if (!blocks.data.device().is_cpu()) {
    throw std::runtime_error(
        "PackedLinear: dequantising packed weights on " + blocks.data.device().str() +
        " is not implemented yet; train on device: cpu, or use base_weights: dense");
  }
  const int64_t in = blocks.in, row_bytes = RowBytes(blocks.type, in);
  at::Tensor w = at::empty({blocks.out, in}, at::kFloat);
  const uint8_t* src = blocks.data.data_ptr<uint8_t>();
  float* dst = w.data_ptr<float>();
  // A few rows per task: one row of a small model is only a few hundred blocks.
  at::parallel_for(0, blocks.out, 16, [&](int64_t begin, int64_t end) {
    const int64_t rows = end - begin;
    DequantizeToFloat(
        blocks.type, std::span<const uint8_t>(src + begin * row_bytes, rows * row_bytes),
        static_cast<uint64_t>(rows * in), std::span<float>(dst + begin * in, rows * in));
  });
  return dtype == at::kFloat ? w : w.to(dtype);
}

PackedLinearImpl::PackedLinearImpl(PackedBlocks blocks, const at::Tensor& bias)
    : blocks_(std::move(blocks)) {
  if (!CanKeepPacked(blocks_.type)) {
    throw std::invalid_argument(std::string("PackedLinear: type ") + TypeInfo(blocks_.type).name +
                                " cannot stay packed (Q4_0, Q4_1 and Q8_0 can)");
  }
  const GgmlTypeInfo& info = TypeInfo(blocks_.type);
  if (blocks_.in <= 0 || blocks_.out <= 0 || blocks_.in % info.block_elements != 0) {
    throw std::invalid_argument("PackedLinear: [out, in] = [" + std::to_string(blocks_.out) + ", " +
                                std::to_string(blocks_.in) + "] needs in a multiple of " +
                                std::to_string(info.block_elements));
  }
  const at::Tensor& d = blocks_.data;
  if (!d.defined() || d.scalar_type() != at::kByte || d.dim() != 2 || d.size(0) != blocks_.out ||
      d.size(1) != RowBytes(blocks_.type, blocks_.in) || !d.is_contiguous()) {
    throw std::invalid_argument("PackedLinear: data must be a contiguous uint8 tensor [" +
                                std::to_string(blocks_.out) + ", " +
                                std::to_string(RowBytes(blocks_.type, blocks_.in)) + "]");
  }
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != blocks_.out)) {
    throw std::invalid_argument("PackedLinear: bias must have shape [" +
                                std::to_string(blocks_.out) + "]");
  }
  blocks_.data = register_buffer("qweight", blocks_.data);
  if (bias.defined()) bias_ = register_parameter("bias", bias.detach(), /*requires_grad=*/false);
}

at::Tensor PackedLinearImpl::forward(const at::Tensor& x) {
  CheckActivation(x, blocks_.in);
  std::optional<at::Tensor> bias;
  if (bias_.defined())
    bias = bias_.scalar_type() == x.scalar_type() ? bias_ : bias_.to(x.scalar_type());
  return PackedLinearFunction::apply(x, blocks_.data, bias, static_cast<int64_t>(blocks_.type),
                                     blocks_.in, blocks_.out);
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
