// Reads config.json and the safetensors shard(s) of a Hugging Face model
// directory.  Tensors are views of the read-only mappings (kept alive by the
// tensors themselves); AssignWeights makes the one copy the model owns.
#include "worker/model/load_hf.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "formats/safetensors.h"

namespace diablo::model {
namespace {

namespace fs = std::filesystem;

nlohmann::json ReadJson(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw FormatError(path.string() + ": cannot be read");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw FormatError(path.string() + ": not valid JSON: " + e.what());
  }
}

at::ScalarType TorchType(SafetensorsDtype dtype, const std::string& where) {
  switch (dtype) {
    case SafetensorsDtype::kF32:
      return at::kFloat;
    case SafetensorsDtype::kF16:
      return at::kHalf;
    case SafetensorsDtype::kBF16:
      return at::kBFloat16;
    case SafetensorsDtype::kF64:
      return at::kDouble;
    default:
      throw FormatError(where + ": weights of dtype " + DtypeName(dtype) +
                        " are not supported (use F32, F16 or BF16)");
  }
}

// The shard files: model.safetensors, or those named by the index.
std::vector<fs::path> ShardFiles(const fs::path& dir) {
  if (fs::exists(dir / "model.safetensors")) return {dir / "model.safetensors"};
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (!fs::exists(index_path)) {
    throw FormatError(dir.string() +
                      ": no model.safetensors or model.safetensors.index.json (PyTorch .bin "
                      "checkpoints are not read; convert them with save_pretrained("
                      "safe_serialization=True))");
  }
  nlohmann::json index = ReadJson(index_path);
  if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
    throw FormatError(index_path.string() + ": has no \"weight_map\" object");
  }
  std::set<std::string> files;
  for (auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string())
      throw FormatError(index_path.string() + ": entry '" + name + "' is not a file name");
    const std::string f = file.get<std::string>();
    if (f.find('/') != std::string::npos || f == "..") {
      throw FormatError(index_path.string() + ": shard '" + f + "' is not a plain file name");
    }
    files.insert(f);
  }
  std::vector<fs::path> shards;
  for (const auto& f : files) shards.push_back(dir / f);
  return shards;
}

}  // namespace

HfCheckpoint ReadHfCheckpoint(const std::string& directory) {
  const fs::path dir(directory);
  const fs::path config_path = dir / "config.json";
  if (!fs::exists(config_path)) {
    throw FormatError(directory + ": no config.json (is this a Hugging Face model directory?)");
  }
  HfCheckpoint checkpoint;
  checkpoint.config = ConfigFromHfJson(ReadJson(config_path), config_path.string());
  for (const fs::path& shard : ShardFiles(dir)) {
    SafetensorsFile file = SafetensorsFile::Open(shard.string());
    std::shared_ptr<const void> mapping = file.mapping();
    for (const SafetensorsTensorInfo& info : file.tensors()) {
      const std::string where = shard.string() + ": tensor '" + info.name + "'";
      at::ScalarType type = TorchType(info.dtype, where);
      auto bytes = file.data(info);
      at::Tensor view = at::from_blob(
          const_cast<uint8_t*>(bytes.data()), info.shape, [mapping](void*) {},
          at::TensorOptions().dtype(type));
      if (!checkpoint.weights.emplace(info.name, view).second) {
        throw FormatError(where + " appears in more than one shard");
      }
    }
  }
  return checkpoint;
}

}  // namespace diablo::model
