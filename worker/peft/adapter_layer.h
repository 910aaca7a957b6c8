// What every adapter-carrying layer offers beyond being a linear layer: merge
// into the frozen weight and back, and the list of tensors an optimiser
// trains.  DiaBloLinear and LoRALinear implement it; injection, adapter files
// and the trainer use it without caring which method a layer carries.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "spec/adapter_config.h"
#include "worker/model/linear_layer.h"

namespace diablo::peft {

class AdapterLayer : public model::LinearLayer {
 public:
  virtual Method method() const = 0;
  // Folds the adapter into the frozen weight (arithmetic in fp32, rounded once
  // to the weight's dtype); while merged, forward runs the base layer alone.
  // Both are no-ops when already in the requested state.
  virtual void merge() = 0;
  // Subtracts the adapter again.  Exact up to fp32 rounding for fp32
  // weights; bf16/fp16 weights keep the rounding of the merge.
  virtual void unmerge() = 0;
  virtual bool merged() const = 0;
  // The tensors an optimiser should update (fp32, requires_grad).
  virtual std::vector<at::Tensor> trainable_parameters() const = 0;
};

}  // namespace diablo::peft
