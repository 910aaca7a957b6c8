// Injection of DiaBlo / LoRA adapters into a LibTorch module tree: match
// dotted module paths against the config's targets, validate everything, then
// freeze the model and swap the matched Linear children for adapter layers.
#include "worker/peft/inject.h"

#include <torch/nn/modules/linear.h>

#include <stdexcept>

#include "spec/target_modules.h"
#include "worker/peft/adapter_layer.h"
#include "worker/peft/diablo_linear.h"
#include "worker/peft/lora_linear.h"

namespace diablo::peft {
namespace {

AdapterLayer* AsAdapter(torch::nn::Module* module) { return dynamic_cast<AdapterLayer*>(module); }

// A frozen base without a dense weight (model::PackedLinear): adapters wrap
// it as a whole, and LoRA's PiSSA/MiLoRA inits, which decompose the dense
// matrix, cannot use it.
bool IsPackedBase(torch::nn::Module* module) {
  return dynamic_cast<model::BaseLinearLayer*>(module) != nullptr && !AsAdapter(module);
}

// A hint for "matched nothing": a few Linear paths that do exist.
std::string LinearExamples(
    const torch::OrderedDict<std::string, std::shared_ptr<torch::nn::Module>>& modules) {
  std::string names;
  int shown = 0, total = 0;
  for (const auto& item : modules) {
    if (!dynamic_cast<torch::nn::LinearImpl*>(item.value().get()) &&
        !IsPackedBase(item.value().get())) {
      continue;
    }
    if (shown < 6) {
      names += (shown ? ", " : "") + item.key();
      ++shown;
    }
    ++total;
  }
  if (total == 0) return "the model has no torch::nn::Linear layers";
  return "Linear layers in this model include " + names + " (" + std::to_string(total) +
         " in total)";
}

std::shared_ptr<torch::nn::Module> MakeAdapter(const std::shared_ptr<torch::nn::Module>& module,
                                               const AdapterConfig& config) {
  if (IsPackedBase(module.get())) {
    if (config.method == Method::kDiaBlo) {
      return std::make_shared<DiaBloLinearImpl>(module, config.blocks, config.dropout);
    }
    return std::make_shared<LoRALinearImpl>(module, config.rank, config.alpha, config.dropout);
  }
  const auto& linear = static_cast<const torch::nn::LinearImpl&>(*module);
  if (config.method == Method::kDiaBlo) {
    return std::make_shared<DiaBloLinearImpl>(linear.weight, linear.bias, config.blocks,
                                              config.dropout);
  }
  return std::make_shared<LoRALinearImpl>(linear.weight, linear.bias, config.rank, config.alpha,
                                          config.dropout, config.init);
}

}  // namespace

std::vector<InjectedAdapter> InjectAdapters(torch::nn::Module& root, const AdapterConfig& config) {
  ValidateAdapterConfig(config);
  std::vector<TargetModule> targets;
  try {
    targets = CompileTargetModules(config.target_modules);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("adapter ") + e.what());
  }
  const auto modules = root.named_modules(/*name_prefix=*/"", /*include_self=*/false);

  // Pass 1: decide and validate, so a bad config leaves the model untouched.
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> chosen;
  for (const auto& item : modules) {
    const std::string& path = item.key();
    bool matched = false;
    for (TargetModule& t : targets) {
      if (MatchesTarget(t, path)) {
        ++t.matches;
        matched = true;
      }
    }
    if (!matched) continue;
    torch::nn::Module* module = item.value().get();
    if (AsAdapter(module)) {
      throw std::invalid_argument("module '" + path +
                                  "' already carries an adapter; inject once "
                                  "(or load the adapter into the existing layers)");
    }
    if (IsPackedBase(module) && config.method == Method::kLoRA &&
        config.init != LoRAInit::kDefault) {
      throw std::invalid_argument("module '" + path + "' is a packed quantised layer; LoRA's " +
                                  LoRAInitName(config.init) +
                                  " init decomposes the dense weight (use init default, or "
                                  "load the base dense)");
    }
    if (!dynamic_cast<torch::nn::LinearImpl*>(module) && !IsPackedBase(module)) {
      throw std::invalid_argument("module '" + path + "' matches the adapter targets but is a " +
                                  module->name() +
                                  ", not a torch::nn::Linear; narrow the target names or pattern");
    }
    chosen.emplace_back(path, item.value());
  }
  for (const TargetModule& t : targets) {
    if (t.matches == 0) {
      throw std::invalid_argument("adapter target '" + t.spec + "' matches no module (" +
                                  (t.is_pattern
                                       ? "a \"re:\" pattern must match the whole dotted path"
                                       : "a plain name must equal the last path component") +
                                  "); " + LinearExamples(modules));
    }
  }

  // Pass 2: freeze the base model, then swap in the adapters (whose own
  // trainable tensors are created with requires_grad set).
  for (at::Tensor& p : root.parameters()) p.set_requires_grad(false);
  std::vector<InjectedAdapter> injected;
  for (const auto& [path, module] : chosen) {
    std::shared_ptr<torch::nn::Module> adapter = MakeAdapter(module, config);
    const size_t dot = path.rfind('.');
    torch::nn::Module& parent = dot == std::string::npos ? root : *modules[path.substr(0, dot)];
    parent.replace_module(LastPathComponent(path), adapter);
    injected.push_back({path, adapter, AsAdapter(adapter.get())});
  }
  return injected;
}

std::vector<InjectedAdapter> FindAdapters(torch::nn::Module& root) {
  std::vector<InjectedAdapter> found;
  for (const auto& item : root.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    if (AdapterLayer* layer = AsAdapter(item.value().get())) {
      found.push_back({item.key(), item.value(), layer});
    }
  }
  return found;
}

int64_t CountTrainableParameters(torch::nn::Module& root) {
  int64_t count = 0;
  for (const InjectedAdapter& adapter : FindAdapters(root)) {
    for (const at::Tensor& t : adapter.layer->trainable_parameters()) count += t.numel();
  }
  return count;
}

}  // namespace diablo::peft
