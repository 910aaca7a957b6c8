// DiaBloLinear: parameter registration, the forward that calls the fused
// kernel op, and merge/unmerge of the block-diagonal update into the weight.
#include "worker/peft/diablo_linear.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <stdexcept>
#include <string>

#include "kernels/block_diag_autograd.h"

namespace diablo::peft {
namespace {

void CheckBase(const at::Tensor& weight, const at::Tensor& bias, const char* layer) {
  if (!weight.defined() || weight.dim() != 2) {
    throw std::invalid_argument(std::string(layer) + ": weight must be a 2-D [out, in] tensor");
  }
  const auto type = weight.scalar_type();
  if (type != at::kFloat && type != at::kBFloat16 && type != at::kHalf) {
    throw std::invalid_argument(std::string(layer) + ": weight must be fp32, bf16 or fp16, got " +
                                c10::toString(type));
  }
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0))) {
    throw std::invalid_argument(std::string(layer) + ": bias must have shape [" +
                                std::to_string(weight.size(0)) + "] to match the weight");
  }
}

}  // namespace

DiaBloLinearImpl::DiaBloLinearImpl(const at::Tensor& weight, const at::Tensor& bias, int64_t blocks,
                                   double dropout)
    : requested_blocks_(blocks), dropout_(dropout) {
  CheckBase(weight, bias, "DiaBloLinear");
  // detach(): a new frozen leaf over the same storage, so wrapping a layer
  // costs no memory and leaves the caller's tensors' flags untouched.
  weight_ = register_parameter("weight", weight.detach(), /*requires_grad=*/false);
  if (bias.defined()) bias_ = register_parameter("bias", bias.detach(), /*requires_grad=*/false);
  Init(weight.size(1), weight.size(0), blocks, weight.options());
}

DiaBloLinearImpl::DiaBloLinearImpl(std::shared_ptr<torch::nn::Module> base, int64_t blocks,
                                   double dropout)
    : requested_blocks_(blocks), dropout_(dropout) {
  auto* layer = dynamic_cast<model::BaseLinearLayer*>(base.get());
  if (layer == nullptr) {
    throw std::invalid_argument("DiaBloLinear: the base layer must be a model::BaseLinearLayer " +
                                std::string("(a packed linear), got ") +
                                (base ? base->name() : std::string("none")));
  }
  // The adapter lives on the base's device; its buffers say where that is.
  at::TensorOptions options;
  for (const at::Tensor& t : base->buffers()) options = options.device(t.device());
  base_module_ = register_module("base_layer", base);
  base_ = layer;
  Init(layer->in_features(), layer->out_features(), blocks, options);
}

void DiaBloLinearImpl::Init(int64_t in, int64_t out, int64_t blocks,
                            const at::TensorOptions& options) {
  if (!(dropout_ >= 0.0 && dropout_ < 1.0)) {
    throw std::invalid_argument("DiaBloLinear: dropout must be in [0, 1), got " +
                                std::to_string(dropout_));
  }
  layout_ = kernels::BlockLayout::For(in, out, blocks);
  block_A_ = register_parameter(
      "block_A",
      at::zeros({layout_.blocks, layout_.block_in, layout_.block_out}, options.dtype(at::kFloat)),
      /*requires_grad=*/true);
}

at::Tensor DiaBloLinearImpl::forward(const at::Tensor& x) {
  if (base_ != nullptr) {
    // The base is not a plain linear, so the adapter runs beside it rather
    // than fused into it; dropout touches the adapter's input only.
    const at::Tensor x_adapter =
        (is_training() && dropout_ > 0.0) ? at::dropout(x, dropout_, /*train=*/true) : x;
    return base_->forward(x) + kernels::BlockDiagAdapter(x_adapter, block_A_, layout_);
  }
  if (merged_) return at::linear(x, weight_, bias_);
  return kernels::BlockDiagLinear(x, weight_, bias_, block_A_, layout_, dropout_, is_training());
}

void DiaBloLinearImpl::merge() {
  if (merged_) return;
  if (base_ != nullptr) {
    throw std::logic_error(
        "DiaBloLinear: cannot merge into a packed (quantised) base layer; merging needs dense "
        "weights: load the base model dense (base_weights: dense) and merge the saved adapter "
        "there");
  }
  at::NoGradGuard no_grad;
  kernels::MergeIntoWeight(weight_, block_A_, layout_, +1.0);
  merged_ = true;
}

void DiaBloLinearImpl::unmerge() {
  if (!merged_) return;
  at::NoGradGuard no_grad;
  kernels::MergeIntoWeight(weight_, block_A_, layout_, -1.0);
  merged_ = false;
}

void DiaBloLinearImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, dtype, non_blocking);
  block_A_.set_data(block_A_.to(at::kFloat));
}

void DiaBloLinearImpl::to(torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(dtype, non_blocking);
  block_A_.set_data(block_A_.to(at::kFloat));
}

void DiaBloLinearImpl::to(torch::Device device, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
}

void DiaBloLinearImpl::pretty_print(std::ostream& stream) const {
  stream << "DiaBloLinear(in=" << layout_.in << ", out=" << layout_.out
         << ", blocks=" << layout_.blocks << " (requested " << requested_blocks_
         << "), block=" << layout_.block_in << "x" << layout_.block_out
         << ", bias=" << (bias_.defined() ? "true" : "false") << ", dropout=" << dropout_
         << (base_ != nullptr ? ", packed base" : "") << (merged_ ? ", merged" : "") << ")";
}

}  // namespace diablo::peft
