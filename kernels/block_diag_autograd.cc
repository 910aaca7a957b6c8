// Autograd functions for DiaBlo: the fused frozen-linear + adapter op and the
// adapter-only op.  Forward/backward arithmetic is delegated to the device
// primitives of block_diag.h; this file decides what to save and which
// gradients to compute.
#include "kernels/block_diag_autograd.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <optional>
#include <stdexcept>
#include <string>

namespace diablo::kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void SaveLayout(AutogradContext* ctx, const BlockLayout& l) {
  ctx->saved_data["in"] = l.in;
  ctx->saved_data["out"] = l.out;
  ctx->saved_data["blocks"] = l.blocks;
  ctx->saved_data["block_in"] = l.block_in;
  ctx->saved_data["block_out"] = l.block_out;
}

BlockLayout LoadLayout(AutogradContext* ctx) {
  BlockLayout l;
  l.in = ctx->saved_data["in"].toInt();
  l.out = ctx->saved_data["out"].toInt();
  l.blocks = ctx->saved_data["blocks"].toInt();
  l.block_in = ctx->saved_data["block_in"].toInt();
  l.block_out = ctx->saved_data["block_out"].toInt();
  return l;
}

class BlockDiagLinearFunction : public torch::autograd::Function<BlockDiagLinearFunction> {
 public:
  // The bias is optional because autograd cannot record an undefined tensor
  // input; which gradients to compute is decided from requires_grad here
  // rather than from edge positions, which shift without a bias.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, const at::Tensor& A,
                            BlockLayout layout, double dropout, bool training) {
    at::Tensor x_adapter = x, mask;
    double scale = 1.0;
    if (training && dropout > 0.0) {
      std::tie(x_adapter, mask) = at::native_dropout(x, dropout, true);
      scale = 1.0 / (1.0 - dropout);
    }
    at::Tensor y = at::linear(x, weight, bias);
    BlockDiagForwardInto(y, x_adapter, A, layout);

    // x is needed only for dA and W only for dx; saving a tensor that is
    // already alive (an input or a parameter) costs no memory, the mask is
    // the one new allocation kept for backward.
    ctx->save_for_backward(
        {A.requires_grad() ? x : at::Tensor(), x.requires_grad() ? weight : at::Tensor(), A, mask});
    SaveLayout(ctx, layout);
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["x_grad"] = x.requires_grad();
    ctx->saved_data["A_grad"] = A.requires_grad();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1], &A = saved[2], &mask = saved[3];
    const BlockLayout layout = LoadLayout(ctx);
    const double scale = ctx->saved_data["scale"].toDouble();
    const at::Tensor& dy = grad_outputs[0];

    at::Tensor dx, dA;
    if (ctx->saved_data["x_grad"].toBool()) {
      dx = at::matmul(dy, weight);
      if (!mask.defined()) {
        BlockDiagBackwardInputInto(dx, dy, A, layout);
      } else {
        // Dropout scales and masks the adapter path's gradient only.
        // In dx's dtype (dy's): the ops take one activation dtype, and the
        // kernels accumulate in fp32 internally whatever it is.
        at::Tensor adapter_dx = at::zeros_like(dx);
        BlockDiagBackwardInputInto(adapter_dx, dy, A, layout);
        adapter_dx.mul_(mask).mul_(scale);
        dx.add_(adapter_dx);
      }
    }
    if (ctx->saved_data["A_grad"].toBool()) {
      // Recomputing dropout(x) from the mask is one elementwise pass, cheaper
      // than keeping a second activation-sized tensor alive.
      dA = BlockDiagBackwardWeight(mask.defined() ? x * mask * scale : x, dy, layout);
    }
    return {dx, at::Tensor(), at::Tensor(), dA, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class BlockDiagAdapterFunction : public torch::autograd::Function<BlockDiagAdapterFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& A,
                            BlockLayout layout) {
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    if (!shape.empty()) shape.back() = layout.out;
    at::Tensor z = at::zeros(shape, x.options());
    BlockDiagForwardInto(z, x, A, layout);
    ctx->save_for_backward({A.requires_grad() ? x : at::Tensor(), A});
    SaveLayout(ctx, layout);
    return z;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &A = saved[1];
    const BlockLayout layout = LoadLayout(ctx);
    const at::Tensor& dz = grad_outputs[0];
    at::Tensor dx, dA;
    if (ctx->needs_input_grad(0)) {
      std::vector<int64_t> shape(dz.sizes().begin(), dz.sizes().end());
      shape.back() = layout.in;
      dx = at::zeros(shape, dz.options());
      BlockDiagBackwardInputInto(dx, dz, A, layout);
    }
    if (ctx->needs_input_grad(1)) dA = BlockDiagBackwardWeight(x, dz, layout);
    return {dx, dA, at::Tensor()};
  }
};

void CheckFrozen(const at::Tensor& t, const char* name) {
  if (t.defined() && t.requires_grad()) {
    throw std::invalid_argument(std::string("BlockDiagLinear: the base ") + name +
                                " must be frozen (requires_grad=false); DiaBlo trains only the "
                                "adapter. Merge the adapter first to fine-tune the full weight");
  }
}

}  // namespace

at::Tensor BlockDiagLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           const at::Tensor& A, const BlockLayout& layout, double dropout,
                           bool training) {
  CheckFrozen(weight, "weight");
  CheckFrozen(bias, "bias");
  if (!(dropout >= 0.0 && dropout < 1.0)) {
    throw std::invalid_argument("BlockDiagLinear: dropout must be in [0, 1), got " +
                                std::to_string(dropout));
  }
  if (!x.defined() || !weight.defined() || weight.dim() != 2 || x.dim() < 1 ||
      x.size(-1) != weight.size(1)) {
    throw std::invalid_argument(
        "BlockDiagLinear: input must have shape [..., in] matching the weight [out, in]" +
        (x.defined() && weight.defined() && weight.dim() == 2
             ? std::string(" (in=") + std::to_string(weight.size(1)) + ", got last dimension " +
                   std::to_string(x.dim() ? x.size(-1) : 0) + ")"
             : std::string()));
  }
  if (x.scalar_type() != weight.scalar_type()) {
    throw std::invalid_argument(std::string("BlockDiagLinear: input dtype ") +
                                c10::toString(x.scalar_type()) + " differs from the weight's " +
                                c10::toString(weight.scalar_type()) +
                                "; cast the input to the model's dtype");
  }
  const std::optional<at::Tensor> maybe_bias =
      bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
  return BlockDiagLinearFunction::apply(x, weight, maybe_bias, A, layout, dropout, training);
}

at::Tensor BlockDiagAdapter(const at::Tensor& x, const at::Tensor& A, const BlockLayout& layout) {
  return BlockDiagAdapterFunction::apply(x, A, layout);
}

}  // namespace diablo::kernels
