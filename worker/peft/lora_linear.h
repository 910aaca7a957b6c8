// LoRALinear: a frozen linear layer plus a trainable low-rank update
// y = x W^T + b + (alpha/r) * dropout(x) A^T B^T, the baseline DiaBlo is
// compared with.  Parameter names: "weight", "bias" (frozen), "lora_A" [r, in]
// and "lora_B" [out, r] (fp32, trainable).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <vector>

#include "spec/adapter_config.h"
#include "worker/peft/adapter_layer.h"

namespace diablo::peft {

class LoRALinearImpl : public torch::nn::Module, public AdapterLayer {
 public:
  // Wraps `weight` [out, in] (fp32, bf16 or fp16) and the optional `bias`
  // [out], frozen.  Initialisation:
  //   kDefault  A ~ Kaiming-uniform (a = sqrt(5), i.e. U(+-1/sqrt(in))), B = 0;
  //   kPiSSA    from W = U S V^T: A = sqrt(S_r/scale) V_r^T, B = U_r sqrt(S_r/scale)
  //             over the r largest singular values, and W becomes
  //             W - scale * B A, so the layer's output is unchanged;
  //   kMiLoRA   the same over the r smallest singular values.
  // (scale = alpha / rank.)  PiSSA/MiLoRA need rank <= min(in, out) and give
  // the layer a new weight tensor (storage shared with the caller is left
  // alone).  Throws std::invalid_argument on bad arguments.
  LoRALinearImpl(const at::Tensor& weight, const at::Tensor& bias, int64_t rank, double alpha,
                 double dropout = 0.0, LoRAInit init = LoRAInit::kDefault);
  // Wraps a base layer without a dense weight (model::BaseLinearLayer, e.g. a
  // packed quantised linear), registered as the child "base_layer".  Only the
  // default init (PiSSA/MiLoRA decompose the dense weight) and no merging.
  LoRALinearImpl(std::shared_ptr<torch::nn::Module> base, int64_t rank, double alpha,
                 double dropout = 0.0);

  // x [..., in] in the weight's dtype -> [..., out]; the adapter path runs in fp32.
  at::Tensor forward(const at::Tensor& x) override;

  Method method() const override { return Method::kLoRA; }
  void merge() override;
  void unmerge() override;
  bool merged() const override { return merged_; }
  std::vector<at::Tensor> trainable_parameters() const override { return {lora_A_, lora_B_}; }

  int64_t rank() const { return rank_; }
  double alpha() const { return alpha_; }
  double scaling() const { return alpha_ / static_cast<double>(rank_); }
  double dropout() const { return dropout_; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  // Undefined when the layer wraps a base layer instead of a weight.
  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }
  const at::Tensor& lora_A() const { return lora_A_; }
  const at::Tensor& lora_B() const { return lora_B_; }

  // Like DiaBloLinear: casting the module keeps lora_A and lora_B in fp32.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

  void pretty_print(std::ostream& stream) const override;

 private:
  void Init(const at::TensorOptions& options);
  void InitFromSvd(bool largest);
  void AddDelta(double sign);

  at::Tensor weight_, bias_, lora_A_, lora_B_;
  std::shared_ptr<torch::nn::Module> base_module_;
  model::LinearLayer* base_ = nullptr;  // base_module_, as a layer
  int64_t in_ = 0, out_ = 0;
  int64_t rank_;
  double alpha_, dropout_;
  LoRAInit init_;
  bool merged_ = false;
};

TORCH_MODULE(LoRALinear);

}  // namespace diablo::peft
