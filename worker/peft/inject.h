// Injection of adapters into a model: every torch::nn::Linear whose dotted
// path matches the config's targets is replaced by a DiaBloLinear or a
// LoRALinear wrapping it, and every other parameter of the model is frozen.
// Packed quantised layers (model::BaseLinearLayer) are wrapped the same way.
#pragma once

#include <torch/nn/module.h>

#include <memory>
#include <string>
#include <vector>

#include "spec/adapter_config.h"

namespace diablo::peft {

class AdapterLayer;  // worker/peft/adapter_layer.h

struct InjectedAdapter {
  std::string path;                           // "model.layers.0.self_attn.q_proj"
  std::shared_ptr<torch::nn::Module> module;  // a DiaBloLinearImpl or LoRALinearImpl
  AdapterLayer* layer = nullptr;              // the same object, as an adapter (merge, params)
};

// Replaces matching Linear layers (depth-first, in registration order) and
// freezes all other parameters.  The model must call its projections through
// the parent's registered children (model::ApplyLinear), since a typed member
// field still points at the replaced Linear.  Nothing is changed when an
// error is thrown.  A matched module that is not a torch::nn::Linear or a
// packed base layer (or already carries an adapter, or is packed and the
// LoRA init is PiSSA/MiLoRA) is an error too.  Throws std::invalid_argument when no module
// matches a target (naming the target and a few module names that exist) or
// when a pattern is not a valid regex.
std::vector<InjectedAdapter> InjectAdapters(torch::nn::Module& root, const AdapterConfig& config);

// The adapters already injected into `root`, in the same order as above.
std::vector<InjectedAdapter> FindAdapters(torch::nn::Module& root);

// Trainable parameters of the injected adapters (the number users compare).
int64_t CountTrainableParameters(torch::nn::Module& root);

}  // namespace diablo::peft
