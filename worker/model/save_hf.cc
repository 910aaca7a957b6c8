// SaveHfDirectory: shard planning, dtype conversion one shard at a time (so
// at most one shard's converted copy is in memory), the index file, and the
// staged directory around it all.
#include "worker/model/save_hf.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "formats/safetensors.h"
#include "formats/staged_directory.h"

namespace diablo::model {
namespace {

SafetensorsDtype FileDtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat:
      return SafetensorsDtype::kF32;
    case at::kBFloat16:
      return SafetensorsDtype::kBF16;
    case at::kHalf:
      return SafetensorsDtype::kF16;
    default:
      throw std::invalid_argument(std::string("cannot save weights as ") + c10::toString(type) +
                                  " (use float32, bfloat16 or float16)");
  }
}

void WriteText(const std::string& path, const std::string& text) {
  const std::span<const uint8_t> piece(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  WriteFileAtomically(path, std::span<const std::span<const uint8_t>>(&piece, 1));
}

std::string ShardName(int index, int count) {
  char name[64];
  std::snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", index + 1, count);
  return name;
}

std::string Gigabytes(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f GB", static_cast<double>(bytes) / 1e9);
  return text;
}

}  // namespace

std::vector<int> PlanShards(const std::vector<uint64_t>& tensor_bytes, uint64_t max_shard_bytes) {
  std::vector<int> shard(tensor_bytes.size());
  int current = 0;
  uint64_t filled = 0;
  for (size_t i = 0; i < tensor_bytes.size(); ++i) {
    if (filled > 0 && filled + tensor_bytes[i] > max_shard_bytes) {
      ++current;
      filled = 0;
    }
    shard[i] = current;
    filled += tensor_bytes[i];
  }
  return shard;
}

std::vector<std::string> WriteHfWeights(LlamaForCausalLMImpl& model, const std::string& dir,
                                        const SaveHfOptions& options) {
  const SafetensorsDtype file_dtype = FileDtype(options.dtype);
  const size_t element = DtypeSize(file_dtype);
  // Registration order is HF's state_dict order (embeddings, layers, norm,
  // lm_head), which keeps each layer within one shard where it fits.
  const auto params = model.named_parameters(/*recurse=*/true);
  std::vector<uint64_t> bytes;
  uint64_t total = 0;
  for (const auto& p : params) {
    bytes.push_back(static_cast<uint64_t>(p.value().numel()) * element);
    total += bytes.back();
  }
  const std::vector<int> plan = PlanShards(bytes, options.max_shard_bytes);
  const int count = plan.empty() ? 1 : plan.back() + 1;

  std::vector<std::string> written;
  nlohmann::json weight_map = nlohmann::json::object();
  at::NoGradGuard no_grad;
  for (int shard = 0; shard < count; ++shard) {
    const std::string name = count == 1 ? "model.safetensors" : ShardName(shard, count);
    std::vector<at::Tensor> keep;  // the converted tensors the entries point into
    std::vector<SafetensorsEntry> entries;
    uint64_t shard_bytes = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      if (plan[i] != shard) continue;
      const at::Tensor t = params[i].value().detach().to(at::kCPU).to(options.dtype).contiguous();
      keep.push_back(t);
      entries.push_back({params[i].key(),
                         file_dtype,
                         t.sizes().vec(),
                         {static_cast<const uint8_t*>(t.data_ptr()), t.nbytes()}});
      weight_map[params[i].key()] = name;
      shard_bytes += t.nbytes();
    }
    if (options.progress) {
      options.progress("writing " + name + " (" + std::to_string(entries.size()) + " tensors, " +
                       Gigabytes(shard_bytes) + ")");
    }
    WriteSafetensors(dir + "/" + name, std::move(entries), {{"format", "pt"}});
    written.push_back(name);
  }
  if (count > 1) {
    const nlohmann::json index = {{"metadata", {{"total_size", total}}},
                                  {"weight_map", weight_map}};
    WriteText(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
    written.push_back("model.safetensors.index.json");
  }
  return written;
}

void SaveHfDirectory(LlamaForCausalLMImpl& model, const std::string& out,
                     const std::map<std::string, std::string>& files,
                     const SaveHfOptions& options) {
  if (!files.count("config.json")) throw std::invalid_argument("SaveHfDirectory: no config.json");
  for (const auto& [name, unused] : files) {
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.') {
      throw std::invalid_argument("SaveHfDirectory: '" + name + "' is not a plain file name");
    }
  }
  StagedDirectory staged(out, options.replace);
  for (const auto& [name, contents] : files) WriteText(staged.path() + "/" + name, contents);
  WriteHfWeights(model, staged.path(), options);
  staged.Commit();
}

}  // namespace diablo::model
