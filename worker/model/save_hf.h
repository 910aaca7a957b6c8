// Writing a model as a Hugging Face model directory: config.json, the
// weights as safetensors (one file, or shards with
// model.safetensors.index.json) under HF parameter names, and whatever
// other files the caller supplies (tokenizer files, generation_config.json).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "worker/model/llama.h"

namespace diablo::model {

struct SaveHfOptions {
  at::ScalarType dtype = at::kFloat;         // of every tensor written (norms included, as HF does)
  uint64_t max_shard_bytes = 5'000'000'000;  // save_pretrained's "5GB"
  bool replace = false;                      // replace an existing non-empty directory
  // Called with one line per step (e.g. each shard written); may be empty.
  std::function<void(const std::string&)> progress;
};

// The shards tensors of the given byte sizes go to, in order: a new shard
// starts when the next tensor would take the current one past
// max_shard_bytes (a tensor larger than that gets a shard of its own).
// Returns the shard index of each tensor.
std::vector<int> PlanShards(const std::vector<uint64_t>& tensor_bytes, uint64_t max_shard_bytes);

// Writes the model's parameters into the existing directory `dir`:
// model.safetensors, or model-0000i-of-0000n.safetensors and
// model.safetensors.index.json.  With tied embeddings there is no
// lm_head.weight to write.  Returns the names of the files written.
std::vector<std::string> WriteHfWeights(LlamaForCausalLMImpl& model, const std::string& dir,
                                        const SaveHfOptions& options);

// Writes the directory `out` atomically (staging_directory.h): `files`
// (name -> contents, config.json among them), then the weights.  Throws
// std::runtime_error (I/O, an existing `out`) or std::invalid_argument; on
// error nothing is left at `out` or beside it.
void SaveHfDirectory(LlamaForCausalLMImpl& model, const std::string& out,
                     const std::map<std::string, std::string>& files, const SaveHfOptions& options);

}  // namespace diablo::model
