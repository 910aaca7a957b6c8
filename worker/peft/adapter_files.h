// Adapter directories in the Hugging Face PEFT layout, which PEFT
// (PeftModel.from_pretrained) and vLLM load for LoRA:
//   <dir>/adapter_config.json         the method and its settings
//   <dir>/adapter_model.safetensors   the trained tensors
//
// LoRA  tensors  base_model.model.<module path>.lora_A.weight  [r, in]   F32
//                base_model.model.<module path>.lora_B.weight  [out, r]  F32
//       config   PEFT's LoraConfig fields: "peft_type": "LORA", "r",
//                "lora_alpha", "lora_dropout", "target_modules" (a list of
//                names, or one Python regex matched against the whole path
//                when any of ours is a "re:" pattern), "bias": "none",
//                "task_type": "CAUSAL_LM", "fan_in_fan_out": false,
//                "init_lora_weights" (true, or "pissa" / "milora"), ...
// DiaBlo tensors <module path>.block_A  [N_eff, b_in, b_out]  F32 (the
//                reference implementation's name and layout)
//       config   "peft_type": "DIABLO", "method": "diablo", "num_blocks" (the
//                requested N), "target_modules" (our syntax), "dropout",
//                "base_model_name_or_path", "task_type", "diablo_version".
// The safetensors metadata holds "format": "pt", "method" and
// "diablo_version".
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <map>
#include <string>
#include <string_view>

#include "spec/adapter_config.h"

namespace diablo::peft {

inline constexpr char kAdapterConfigFile[] = "adapter_config.json";
inline constexpr char kAdapterWeightsFile[] = "adapter_model.safetensors";

// The text of adapter_config.json for `config` (pretty-printed, keys sorted).
std::string AdapterConfigToJson(const AdapterConfig& config);

// Parses adapter_config.json text: ours, or one written by PEFT for LoRA.
// PEFT settings that would change the layer's function and that LoRALinear
// does not implement (DoRA, bias training, fan_in_fan_out, per-module
// rank/alpha patterns, modules_to_save, ...) are refused; use_rslora is
// folded into alpha.  Throws model::FormatError naming `source` and the field.
AdapterConfig AdapterConfigFromJson(std::string_view json, const std::string& source);

// Reads <dir>/adapter_config.json.  Throws model::FormatError.
AdapterConfig ReadAdapterConfig(const std::string& dir);

// Writes <dir> (created if missing) with `config` and the weights of every
// adapter injected into `model`; each file is replaced atomically.  Throws
// std::invalid_argument when the model has no adapters or they disagree with
// `config` (method, blocks, rank, alpha), std::runtime_error on I/O errors.
void SaveAdapter(torch::nn::Module& model, const AdapterConfig& config, const std::string& dir);

// Copies <dir>/adapter_model.safetensors into the adapters already injected
// into `model`.  Every tensor of the file must belong to an injected adapter
// and every adapter must find its tensors, with the same shapes (F32, F16,
// BF16 or F64 values are converted to the parameter's dtype); otherwise
// model::FormatError names the module, the expected and found shapes, and
// nothing is copied.  Merged layers are unmerged, loaded and merged again.
void LoadAdapterWeights(torch::nn::Module& model, const std::string& dir);

// The same checks and copy for tensors already in memory, named as in
// adapter_model.safetensors; `source` names them in error messages.
void LoadAdapterTensors(torch::nn::Module& model, const std::map<std::string, at::Tensor>& tensors,
                        const std::string& source);

// Reads the config, injects its adapters into `model` (which must carry none
// yet) and loads the weights; returns the config.  Throws
// model::FormatError / std::invalid_argument; after an error in the weights
// the model carries freshly initialised adapters and should be discarded.
AdapterConfig LoadAdapter(torch::nn::Module& model, const std::string& dir);

}  // namespace diablo::peft
