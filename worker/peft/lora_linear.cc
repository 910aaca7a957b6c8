// LoRALinear: initialisation (default, PiSSA, MiLoRA), the forward as plain
// differentiable ATen ops, and merge/unmerge of scale * B A into the weight.
#include "worker/peft/lora_linear.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <stdexcept>
#include <string>

namespace diablo::peft {

LoRALinearImpl::LoRALinearImpl(const at::Tensor& weight, const at::Tensor& bias, int64_t rank,
                               double alpha, double dropout, LoRAInit init)
    : rank_(rank), alpha_(alpha), dropout_(dropout), init_(init) {
  if (!weight.defined() || weight.dim() != 2) {
    throw std::invalid_argument("LoRALinear: weight must be a 2-D [out, in] tensor");
  }
  const auto type = weight.scalar_type();
  if (type != at::kFloat && type != at::kBFloat16 && type != at::kHalf) {
    throw std::invalid_argument(std::string("LoRALinear: weight must be fp32, bf16 or fp16, got ") +
                                c10::toString(type));
  }
  const int64_t out = weight.size(0), in = weight.size(1);
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != out)) {
    throw std::invalid_argument("LoRALinear: bias must have shape [" + std::to_string(out) + "]");
  }
  in_ = in;
  out_ = out;
  if (init != LoRAInit::kDefault && rank > std::min(in, out)) {
    throw std::invalid_argument(std::string("LoRALinear: ") + LoRAInitName(init) +
                                " needs rank <= " + std::to_string(std::min(in, out)) +
                                " (min of the layer's sizes), got " + std::to_string(rank));
  }
  weight_ = register_parameter("weight", weight.detach(), /*requires_grad=*/false);
  if (bias.defined()) bias_ = register_parameter("bias", bias.detach(), /*requires_grad=*/false);
  Init(weight.options());
}

LoRALinearImpl::LoRALinearImpl(std::shared_ptr<torch::nn::Module> base, int64_t rank, double alpha,
                               double dropout)
    : rank_(rank), alpha_(alpha), dropout_(dropout), init_(LoRAInit::kDefault) {
  auto* layer = dynamic_cast<model::BaseLinearLayer*>(base.get());
  if (layer == nullptr) {
    throw std::invalid_argument("LoRALinear: the base layer must be a model::BaseLinearLayer " +
                                std::string("(a packed linear), got ") +
                                (base ? base->name() : std::string("none")));
  }
  in_ = layer->in_features();
  out_ = layer->out_features();
  at::TensorOptions options;
  for (const at::Tensor& t : base->buffers()) options = options.device(t.device());
  base_module_ = register_module("base_layer", base);
  base_ = layer;
  Init(options);
}

void LoRALinearImpl::Init(const at::TensorOptions& options) {
  if (rank_ <= 0)
    throw std::invalid_argument("LoRALinear: rank must be positive, got " + std::to_string(rank_));
  if (!std::isfinite(alpha_) || alpha_ <= 0.0) {
    throw std::invalid_argument("LoRALinear: alpha must be positive, got " +
                                std::to_string(alpha_));
  }
  if (!(dropout_ >= 0.0 && dropout_ < 1.0)) {
    throw std::invalid_argument("LoRALinear: dropout must be in [0, 1), got " +
                                std::to_string(dropout_));
  }
  const auto fp32 = options.dtype(at::kFloat);
  lora_A_ = register_parameter("lora_A", at::empty({rank_, in_}, fp32), /*requires_grad=*/true);
  lora_B_ = register_parameter("lora_B", at::zeros({out_, rank_}, fp32), /*requires_grad=*/true);

  at::NoGradGuard no_grad;
  if (init_ == LoRAInit::kDefault) {
    // Kaiming-uniform with a = sqrt(5) over fan_in = in, as torch.nn.Linear
    // and PEFT do: gain sqrt(2/(1+5)) * sqrt(3/in) = 1/sqrt(in).
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_));
    lora_A_.uniform_(-bound, bound);
  } else {
    InitFromSvd(init_ == LoRAInit::kPiSSA);
  }
}

void LoRALinearImpl::InitFromSvd(bool largest) {
  const at::Tensor w = weight_.to(at::kFloat);
  auto [U, S, Vh] = at::linalg_svd(w, /*full_matrices=*/false);  // S descending
  const int64_t k = S.size(0);
  const int64_t first = largest ? 0 : k - rank_;
  const at::Tensor root = (S.narrow(0, first, rank_) / scaling()).sqrt();
  lora_A_.copy_(root.unsqueeze(1) * Vh.narrow(0, first, rank_));  // [r, in]
  lora_B_.copy_(U.narrow(1, first, rank_) * root.unsqueeze(0));   // [out, r]
  // The residual replaces the layer's weight data rather than writing into
  // it, so a tensor the caller still shares (tied embeddings) is unchanged.
  const at::Tensor residual = w - scaling() * at::mm(lora_B_, lora_A_);
  weight_.set_data(residual.to(weight_.scalar_type()));
}

at::Tensor LoRALinearImpl::forward(const at::Tensor& x) {
  at::Tensor base = base_ != nullptr ? base_->forward(x) : at::linear(x, weight_, bias_);
  if (merged_) return base;
  const int64_t in = in_, out = out_;
  at::Tensor xa = (is_training() && dropout_ > 0.0) ? at::dropout(x, dropout_, true) : x;
  at::Tensor h = at::mm(xa.reshape({-1, in}).to(at::kFloat), lora_A_.t());  // [R, r]
  at::Tensor base_rows = base.reshape({-1, out});
  at::Tensor y;
  if (base.scalar_type() == at::kFloat) {
    y = at::addmm(base_rows, h, lora_B_.t(), /*beta=*/1.0, /*alpha=*/scaling());
  } else {
    // Sum in fp32 and round once, as DiaBloLinear does.
    y = at::addmm(base_rows.to(at::kFloat), h, lora_B_.t(), 1.0, scaling()).to(base.scalar_type());
  }
  return y.view(base.sizes());
}

void LoRALinearImpl::AddDelta(double sign) {
  at::NoGradGuard no_grad;
  // fp32 product, one rounding into the weight's dtype.
  weight_.add_(at::mm(lora_B_, lora_A_), sign * scaling());
}

void LoRALinearImpl::merge() {
  if (merged_) return;
  if (base_ != nullptr) {
    throw std::logic_error(
        "LoRALinear: cannot merge into a packed (quantised) base layer; merging needs dense "
        "weights: load the base model dense and merge the saved adapter there");
  }
  AddDelta(+1.0);
  merged_ = true;
}

void LoRALinearImpl::unmerge() {
  if (!merged_) return;
  AddDelta(-1.0);
  merged_ = false;
}

void LoRALinearImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, dtype, non_blocking);
  lora_A_.set_data(lora_A_.to(at::kFloat));
  lora_B_.set_data(lora_B_.to(at::kFloat));
}

void LoRALinearImpl::to(torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(dtype, non_blocking);
  lora_A_.set_data(lora_A_.to(at::kFloat));
  lora_B_.set_data(lora_B_.to(at::kFloat));
}

void LoRALinearImpl::to(torch::Device device, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
}

void LoRALinearImpl::pretty_print(std::ostream& stream) const {
  stream << "LoRALinear(in=" << in_ << ", out=" << out_ << ", rank=" << rank_
         << ", alpha=" << alpha_ << ", init=" << LoRAInitName(init_)
         << ", bias=" << (bias_.defined() ? "true" : "false") << ", dropout=" << dropout_
         << (base_ != nullptr ? ", packed base" : "") << (merged_ ? ", merged" : "") << ")";
}

}  // namespace diablo::peft
