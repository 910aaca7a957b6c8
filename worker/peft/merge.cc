// MergeAndUnload: merge, then swap each adapter layer for a Linear that
// shares the merged weight (no copy) and the bias.
#include "worker/peft/merge.h"

#include <ATen/core/grad_mode.h>
#include <torch/nn/modules/linear.h>

#include "worker/peft/adapter_layer.h"
#include "worker/peft/inject.h"

namespace diablo::peft {

int MergeAndUnload(torch::nn::Module& root) {
  at::NoGradGuard no_grad;
  const std::vector<InjectedAdapter> adapters = FindAdapters(root);
  const auto modules = root.named_modules(/*name_prefix=*/"", /*include_self=*/false);
  for (const InjectedAdapter& adapter : adapters) {
    adapter.layer->merge();
    const auto params = adapter.module->named_parameters(/*recurse=*/false);
    const at::Tensor weight = params["weight"];
    const at::Tensor* bias = params.find("bias");
    const bool has_bias = bias != nullptr && bias->defined();
    torch::nn::Linear linear(
        torch::nn::LinearOptions(weight.size(1), weight.size(0)).bias(has_bias));
    // set_data adopts the tensors (same storage, dtype and device), where a
    // copy_ into the fresh fp32 Linear would cast.
    linear->weight.set_data(weight);
    linear->weight.set_requires_grad(false);
    if (has_bias) {
      linear->bias.set_data(*bias);
      linear->bias.set_requires_grad(false);
    }
    linear->train(adapter.module->is_training());
    const size_t dot = adapter.path.rfind('.');
    torch::nn::Module& parent =
        dot == std::string::npos ? root : *modules[adapter.path.substr(0, dot)];
    parent.replace_module(adapter.path.substr(dot == std::string::npos ? 0 : dot + 1), linear);
  }
  return static_cast<int>(adapters.size());
}

}  // namespace diablo::peft
