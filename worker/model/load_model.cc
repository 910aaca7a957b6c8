// LoadModel: picks the loader by path, builds the module, assigns weights.
#include "worker/model/load_model.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <filesystem>
#include <optional>
#include <set>
#include <stdexcept>

#include "formats/gguf.h"
#include "worker/model/load_gguf.h"
#include "worker/model/load_hf.h"
#include "worker/model/packed_linear.h"

namespace diablo::model {
namespace {

std::string ShapeString(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const char kEmbeddings[] = "model.embed_tokens";

// Swaps each named Linear for a PackedLinear over its blocks, keeping the
// Linear's bias parameter slot so AssignWeights fills it as before, and the
// embedding table for a PackedEmbedding.  Returns the linears replaced.
int64_t ReplaceWithPacked(LlamaForCausalLMImpl& model, std::map<std::string, PackedBlocks> packed,
                          at::ScalarType dtype) {
  if (auto table = packed.extract(kEmbeddings))
    model.model->use_packed_embeddings(PackedEmbedding(std::move(table.mapped()), dtype));
  const auto modules = model.named_modules(/*name_prefix=*/"", /*include_self=*/false);
  int64_t replaced = 0;
  for (auto& [path, blocks] : packed) {
    const auto* linear = modules.find(path);
    const size_t dot = path.rfind('.');
    torch::nn::Module* parent = &model;  // lm_head is the model's own child
    if (dot != std::string::npos) {
      const auto* found = modules.find(path.substr(0, dot));
      parent = found != nullptr ? found->get() : nullptr;
    }
    auto* dense = linear ? dynamic_cast<torch::nn::LinearImpl*>(linear->get()) : nullptr;
    if (dense == nullptr || parent == nullptr) {
      throw FormatError("GGUF weight '" + path + "' has no linear layer in the model");
    }
    if (dense->weight.size(0) != blocks.out || dense->weight.size(1) != blocks.in) {
      throw FormatError("GGUF projection '" + path + "' has shape [" + std::to_string(blocks.out) +
                        ", " + std::to_string(blocks.in) + "], the config implies " +
                        ShapeString(dense->weight.sizes()));
    }
    parent->replace_module(dot == std::string::npos ? path : path.substr(dot + 1),
                           PackedLinear(std::move(blocks), dense->bias).ptr());
    ++replaced;
  }
  return replaced;
}

}  // namespace

void AssignWeights(LlamaForCausalLMImpl& model, std::map<std::string, at::Tensor> weights,
                   const std::string& source, at::ScalarType dtype, WeightSource kind) {
  at::NoGradGuard no_grad;
  // Tied embeddings: files may carry lm_head.weight as a copy of the embedding.
  if (model.config().tie_word_embeddings) weights.erase("lm_head.weight");
  for (auto& item : model.named_parameters(/*recurse=*/true)) {
    const std::string& name = item.key();
    auto it = weights.find(name);
    if (it == weights.end()) {
      throw FormatError(source + ": weight '" + name +
                        "' is missing (hint: is this file for another model or a partial "
                        "checkpoint?)");
    }
    if (it->second.sizes() != item.value().sizes()) {
      throw FormatError(source + ": weight '" + name + "' has shape " +
                        ShapeString(it->second.sizes()) + ", the config implies " +
                        ShapeString(item.value().sizes()));
    }
    // Norm weights stay fp32 (HF keeps RMSNorm math in fp32 either way, and
    // they are tiny); projections and embeddings take the requested dtype.
    const bool is_norm = name.find("norm.weight") != std::string::npos;
    // A read-only mapping must be copied (merging adapters writes into these
    // weights); owned tensors are adopted, so a GGUF load holds each weight once.
    at::Tensor value = it->second
                           .to(is_norm ? at::kFloat : dtype, /*non_blocking=*/false,
                               /*copy=*/kind == WeightSource::kReadOnly)
                           .contiguous();
    item.value().set_data(value);
    item.value().set_requires_grad(false);
    weights.erase(it);
  }
  if (!weights.empty()) {
    throw FormatError(source + ": " + std::to_string(weights.size()) +
                      " weights have no place in the model, e.g. '" + weights.begin()->first +
                      "' (hint: the config may not match the weights)");
  }
}

LoadedModel LoadModel(const std::string& path, const LoadOptions& options) {
  namespace fs = std::filesystem;
  if (!fs::exists(path)) {
    throw std::invalid_argument(path +
                                ": no such file or directory (give a .gguf file or a "
                                "Hugging Face model directory)");
  }
  LoadedModel loaded;
  loaded.source = path;
  std::map<std::string, at::Tensor> weights;
  std::optional<at::Tensor> rope_factors;
  std::map<std::string, PackedBlocks> packed;
  WeightSource kind = WeightSource::kOwned;
  LlamaConfig config;
  if (fs::is_directory(path)) {
    if (options.keep_quantized) {
      throw std::invalid_argument(path +
                                  ": packed (quantised) base weights need a GGUF file with "
                                  "Q4_0, Q4_1 or Q8_0 weights; a Hugging Face directory is "
                                  "loaded dense");
    }
    loaded.format = "hf";
    HfCheckpoint checkpoint = ReadHfCheckpoint(path);
    config = checkpoint.config;
    weights = std::move(checkpoint.weights);
    kind = WeightSource::kReadOnly;
  } else {
    loaded.format = "gguf";
    GgufFile file = GgufFile::Open(path);
    config = ConfigFromGguf(file, path);
    std::set<std::string> skip;
    if (options.keep_quantized) {
      packed = ReadGgufPackedWeights(file, config);
      // Checked here, before the dense weights are read, for every caller.
      if (packed.empty()) {
        throw std::invalid_argument(path +
                                    ": packed base weights asked for, but the file has no "
                                    "Q4_0, Q4_1 or Q8_0 weights to keep packed; load it dense "
                                    "(base_weights: dense, --base-weights dense)");
      }
      for (const auto& item : packed) skip.insert(item.first + ".weight");
    }
    weights = ReadGgufWeights(file, config, skip);
    rope_factors = ReadGgufRopeFactors(file);
  }
  {
    DeferWeightAllocation defer;  // every weight is assigned or replaced below
    loaded.model = LlamaForCausalLM(config);
  }
  loaded.packed_embeddings = packed.count(kEmbeddings) > 0;
  loaded.packed_layers = ReplaceWithPacked(*loaded.model, std::move(packed), options.dtype);
  AssignWeights(*loaded.model, std::move(weights), path, options.dtype, kind);
  if (rope_factors.has_value()) loaded.model->ScaleRotaryFrequencies(*rope_factors);
  loaded.model->eval();
  return loaded;
}

}  // namespace diablo::model
