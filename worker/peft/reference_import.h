// Import of adapters trained with the paper's reference implementation
// (github.com/ziyangjoy/DiaBlo): its trainer saves, with torch.save, a dict
// from "<module path>.block_A" to the adapter tensor [N_eff, b_in, b_out]
// (in the model's dtype, often bf16), and nothing else: no block count, no
// targets.  Both are inferred here from the shapes and the model's layers.
// The file is read by the restricted unpickler of torch_save_reader.h, never
// by Python's pickle.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <string>
#include <utility>
#include <vector>

#include "spec/adapter_config.h"

namespace diablo::peft {

// The file's tensors as contiguous fp32 CPU copies, in file order (strided
// and offset views are resolved).  Throws model::FormatError.
std::vector<std::pair<std::string, at::Tensor>> ReadReferenceTensors(const std::string& path);

struct ReferenceImport {
  AdapterConfig config;              // kDiaBlo, the inferred N, the layer names
  std::vector<std::string> modules;  // module paths that received an adapter
};

// Reads `path` and loads it into `model`.  When the model carries no
// adapters yet, DiaBlo adapters are injected first with the block count N
// that reproduces every tensor's layout on its layer (kernels::BlockLayout)
// and the layer names found in the file as targets; otherwise the existing
// DiaBlo adapters must match.  Every tensor must name a Linear layer of the
// model with a compatible shape, the layouts must agree on one N, and every
// injected adapter must receive a tensor; model::FormatError says which
// module and why, with a hint about the base model.  `base_model` is only
// recorded in the returned config.
ReferenceImport ImportReferenceAdapter(torch::nn::Module& model, const std::string& path,
                                       const std::string& base_model = "");

}  // namespace diablo::peft
