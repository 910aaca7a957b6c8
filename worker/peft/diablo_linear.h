// DiaBloLinear: a frozen linear layer plus a trainable DiaBlo adapter, the
// module that injection puts in place of a torch::nn::Linear.  Parameter names
// follow the Hugging Face layout of the wrapped layer: "weight" and "bias"
// (frozen) and "block_A" (trainable), so state dicts keep their paths.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <memory>
#include <ostream>
#include <vector>

#include "kernels/block_diag.h"
#include "worker/peft/adapter_layer.h"

namespace diablo::peft {

class DiaBloLinearImpl : public torch::nn::Module, public AdapterLayer {
 public:
  // Wraps `weight` [out, in] (fp32, bf16 or fp16) and the optional `bias`
  // [out] (undefined for none), sharing their storage; both are frozen.  The
  // adapter "block_A" [N_eff, b_in, b_out] is fp32, zero (so the layer starts
  // out equal to the base), on the weight's device.  `dropout` in [0, 1)
  // applies to the adapter's input in training mode only.
  // Throws std::invalid_argument on bad shapes, dtypes, blocks or dropout.
  DiaBloLinearImpl(const at::Tensor& weight, const at::Tensor& bias, int64_t blocks,
                   double dropout = 0.0);
  // Wraps a base layer without a dense weight (model::PackedLinear), which
  // must implement model::BaseLinearLayer and is registered as the child
  // "base_layer": forward = base(x) + blockdiag(dropout(x), A).  Such a layer
  // cannot merge (there is no dense weight to add into).
  DiaBloLinearImpl(std::shared_ptr<torch::nn::Module> base, int64_t blocks, double dropout = 0.0);

  // x [..., in] in the weight's dtype -> [..., out].
  at::Tensor forward(const at::Tensor& x) override;

  Method method() const override { return Method::kDiaBlo; }
  void merge() override;
  void unmerge() override;
  bool merged() const override { return merged_; }
  std::vector<at::Tensor> trainable_parameters() const override { return {block_A_}; }

  const kernels::BlockLayout& layout() const { return layout_; }
  int64_t requested_blocks() const { return requested_blocks_; }
  double dropout() const { return dropout_; }
  // Undefined when the layer wraps a base layer instead of a weight.
  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }
  const at::Tensor& block_A() const { return block_A_; }

  // Casting the module moves the adapter with it but keeps it fp32: DiaBlo
  // trains A in fp32 whatever the base model's dtype.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;

  void pretty_print(std::ostream& stream) const override;

 private:
  void Init(int64_t in, int64_t out, int64_t blocks, const at::TensorOptions& options);

  at::Tensor weight_, bias_, block_A_;
  std::shared_ptr<torch::nn::Module> base_module_;
  model::LinearLayer* base_ = nullptr;  // base_module_, as a layer
  kernels::BlockLayout layout_;
  int64_t requested_blocks_;
  double dropout_;
  bool merged_ = false;
};

TORCH_MODULE(DiaBloLinear);

}  // namespace diablo::peft
