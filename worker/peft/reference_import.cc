// Reference-adapter import: resolve the archive's strided views into fp32
// tensors, map each "<path>.block_A" onto the model's layer, find the one
// block count N that explains every layout, inject, and load with the same
// checks as an adapter directory.
#include "worker/peft/reference_import.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <stdexcept>

#include "formats/gguf.h"  // FormatError
#include "formats/torch_save_reader.h"
#include "kernels/block_diag.h"
#include "worker/peft/adapter_files.h"
#include "worker/peft/diablo_linear.h"
#include "worker/peft/inject.h"
#include "worker/peft/tensor_io.h"

namespace diablo::peft {
namespace {

using model::FormatError;

constexpr char kSuffix[] = ".block_A";
constexpr char kHint[] = "hint: was this adapter trained on another base model?";

struct LayerAdapter {
  std::string module;
  kernels::BlockLayout layout;
};

bool SameLayout(const kernels::BlockLayout& a, const kernels::BlockLayout& b) {
  return a.blocks == b.blocks && a.block_in == b.block_in && a.block_out == b.block_out;
}

// The block counts N (1..max(in, out); larger N change nothing) for which
// the reference's rule gives `layout`.
std::vector<int64_t> BlockCountsFor(const kernels::BlockLayout& layout) {
  std::vector<int64_t> counts;
  for (int64_t n = 1; n <= std::max(layout.in, layout.out); ++n) {
    if (SameLayout(kernels::BlockLayout::For(layout.in, layout.out, n), layout))
      counts.push_back(n);
  }
  return counts;
}

// One N for all layers, preferring the first layer's N_eff (the N a user
// asked for whenever it divides the sizes).
int64_t InferBlockCount(const std::vector<LayerAdapter>& layers, const std::string& source) {
  std::vector<int64_t> common = BlockCountsFor(layers[0].layout);
  for (size_t i = 1; i < layers.size() && !common.empty(); ++i) {
    std::vector<int64_t> mine = BlockCountsFor(layers[i].layout), both;
    std::set_intersection(common.begin(), common.end(), mine.begin(), mine.end(),
                          std::back_inserter(both));
    if (both.empty()) {
      throw FormatError(source + ": the adapters of '" + layers[0].module + "' and '" +
                        layers[i].module +
                        "' cannot come from one block count N (the reference uses one N for all "
                        "layers); " +
                        kHint);
    }
    common = std::move(both);
  }
  if (std::binary_search(common.begin(), common.end(), layers[0].layout.blocks))
    return layers[0].layout.blocks;
  return common.front();
}

// The layer's sizes, from a plain Linear or an already injected DiaBloLinear.
std::pair<int64_t, int64_t> InOut(torch::nn::Module& module, const std::string& path,
                                  const std::string& source) {
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(&module)) {
    return {linear->weight.size(1), linear->weight.size(0)};
  }
  if (auto* diablo = dynamic_cast<DiaBloLinearImpl*>(&module)) {
    return {diablo->layout().in, diablo->layout().out};
  }
  throw FormatError(source + ": module '" + path + "' is a " + module.name() +
                    ", not a Linear layer; " + kHint);
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> ReadReferenceTensors(const std::string& path) {
  TorchCheckpoint ckpt = ReadTorchCheckpoint(path);
  // Storages are copied once into aligned, owned tensors; views of the same
  // storage share that copy.
  std::map<std::string, at::Tensor> storages;
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const TorchTensorRecord& r : ckpt.tensors) {
    at::ScalarType type = ToScalarType(r.dtype);
    if (!at::isFloatingType(type)) {
      throw FormatError(path + ": tensor '" + r.name + "' holds " + c10::toString(type) +
                        " values; adapters are floating point");
    }
    auto [it, fresh] = storages.try_emplace(r.storage);
    if (fresh) {
      it->second =
          at::empty({static_cast<int64_t>(r.storage_elements)}, at::TensorOptions().dtype(type));
      std::span<const uint8_t> bytes = ckpt.storages.at(r.storage);
      if (!bytes.empty()) std::memcpy(it->second.data_ptr(), bytes.data(), bytes.size());
    }
    at::Tensor view = it->second.as_strided(r.sizes, r.strides, r.offset);
    out.emplace_back(r.name,
                     view.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true).contiguous());
  }
  return out;
}

ReferenceImport ImportReferenceAdapter(torch::nn::Module& model, const std::string& path,
                                       const std::string& base_model) {
  std::vector<std::pair<std::string, at::Tensor>> tensors = ReadReferenceTensors(path);
  if (tensors.empty()) throw FormatError(path + ": the file holds no tensors");
  auto fail = [&](const std::string& what) { throw FormatError(path + ": " + what); };

  const auto modules = model.named_modules(/*name_prefix=*/"", /*include_self=*/false);
  std::vector<LayerAdapter> layers;
  std::map<std::string, at::Tensor> by_name;
  ReferenceImport result;
  for (const auto& [key, value] : tensors) {
    if (!key.ends_with(kSuffix)) {
      fail("tensor '" + key +
           "' is not a DiaBlo adapter (expected '<module path>.block_A'; "
           "classification heads saved by the reference are not supported)");
    }
    std::string module_path = key.substr(0, key.size() - std::strlen(kSuffix));
    const std::shared_ptr<torch::nn::Module>* module = modules.find(module_path);
    if (module == nullptr)
      fail("module '" + module_path + "' does not exist in the model; " + kHint);
    auto [in, out] = InOut(**module, module_path, path);
    kernels::BlockLayout layout;
    try {
      layout = kernels::BlockLayout::FromAdapterShape(in, out, value.sizes());
    } catch (const std::invalid_argument& e) {
      fail("module '" + module_path + "': " + e.what() + "; " + kHint);
    }
    layers.push_back({module_path, layout});
    by_name.emplace(key, value);
    result.modules.push_back(module_path);
  }

  AdapterConfig& config = result.config;
  config.method = Method::kDiaBlo;
  config.blocks = InferBlockCount(layers, path);
  config.dropout = 0.0;
  config.base_model = base_model;
  config.target_modules.clear();
  for (const LayerAdapter& l : layers) {
    std::string name = l.module.substr(l.module.rfind('.') + 1);
    if (std::find(config.target_modules.begin(), config.target_modules.end(), name) ==
        config.target_modules.end()) {
      config.target_modules.push_back(name);
    }
  }
  if (FindAdapters(model).empty()) InjectAdapters(model, config);
  // Checks that every adapter (including any the target names matched but
  // the file lacks) gets a tensor of the right shape, then copies.
  LoadAdapterTensors(model, by_name, path);
  return result;
}

}  // namespace diablo::peft
