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
  if (!(dropout >= 0.0 && dropout < 1.0)) {
    throw std::invalid_argument("DiaBloLinear: dropout must be in [0, 1), got " +
                                std::to_string(dropout));
  }
  layout_ = kernels::BlockLayout::For(weight.size(1), weight.size(0), blocks);
  // detach(): a new frozen leaf over the same storage, so wrapping a layer
  // costs no memory and leaves the caller's tensors' flags untouched.
  weight_ = register_parameter("weight", weight.detach(), /*requires_grad=*/false);
  if (bias.defined()) bias_ = register_parameter("bias", bias.detach(), /*requires_grad=*/false);
  block_A_ = register_parameter("block_A",
                                at::zeros({layout_.blocks, layout_.block_in, layout_.block_out},
                                          weight.options().dtype(at::kFloat)),
                                /*requires_grad=*/true);
}

at::Tensor DiaBloLinearImpl::forward(const at::Tensor& x) {
  if (merged_) return at::linear(x, weight_, bias_);
  return kernels::BlockDiagLinear(x, weight_, bias_, block_A_, layout_, dropout_, is_training());
}

void DiaBloLinearImpl::merge() {
  if (merged_) return;
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
         << (merged_ ? ", merged" : "") << ")";
}

}  // namespace diablo::peft
