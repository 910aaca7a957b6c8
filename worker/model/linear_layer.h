// How the transformer calls its projections.  Adapters (worker/peft) replace
// plain torch::nn::Linear children in place, so the model looks a projection
// up by name at call time instead of holding a typed member that injection
// could not update.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <string>

namespace diablo::model {

// Implemented by every module that may stand in for a Linear layer
// (DiaBloLinear, LoRALinear, packed quantised linears).
class LinearLayer {
 public:
  virtual ~LinearLayer() = default;
  // [..., in] -> [..., out]
  virtual at::Tensor forward(const at::Tensor& x) = 0;
};

// A frozen base projection whose weight is not a dense tensor (packed
// quantised blocks).  Adapters wrap it through this interface, since there is
// no weight they could share or merge into.
class BaseLinearLayer : public LinearLayer {
 public:
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
};

// Runs `parent`'s child `name` on x: a torch::nn::Linear or any LinearLayer.
// Throws std::logic_error if the child is missing or of another kind.
at::Tensor ApplyLinear(torch::nn::Module& parent, const std::string& name, const at::Tensor& x);

}  // namespace diablo::model
