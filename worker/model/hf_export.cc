// The non-weight files of an exported model directory: copied from a
// Hugging Face source, generated for a GGUF one.
#include "worker/model/hf_export.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "formats/gguf.h"
#include "text/tokenizer_export.h"
#include "worker/model/hf_config_json.h"

namespace diablo::model {
namespace {

namespace fs = std::filesystem;

// Files transformers and vLLM read beside the weights; copied as they are.
constexpr const char* kSideFiles[] = {
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
};

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError(path.string() + ": cannot be read");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

std::string TorchDtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "float32";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    default:
      throw std::invalid_argument(std::string("dtype ") + c10::toString(dtype) +
                                  " has no Hugging Face name here (use float32, bfloat16 or "
                                  "float16)");
  }
}

at::ScalarType TorchDtypeFromName(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  throw std::invalid_argument("dtype '" + name + "' is not float32, bfloat16 or float16");
}

std::map<std::string, std::string> HfTokenizerFilesFor(const std::string& source) {
  if (!fs::is_directory(source)) return ExportGgufTokenizer(GgufFile::Open(source), source);
  std::map<std::string, std::string> files;
  for (const char* name : kSideFiles) {
    const fs::path path = fs::path(source) / name;
    if (fs::is_regular_file(path)) files[name] = ReadFile(path);
  }
  return files;
}

std::string HfConfigFileFor(const std::string& source, LlamaForCausalLMImpl& model,
                            at::ScalarType dtype) {
  const std::string dtype_name = TorchDtypeName(dtype);
  if (fs::is_directory(source)) {
    const fs::path path = fs::path(source) / "config.json";
    nlohmann::ordered_json config;
    try {
      config = nlohmann::ordered_json::parse(ReadFile(path));
    } catch (const nlohmann::json::parse_error& e) {
      throw FormatError(path.string() + ": not valid JSON: " + e.what());
    }
    // transformers 5 writes "dtype", earlier versions "torch_dtype".
    if (config.contains("dtype")) config["dtype"] = dtype_name;
    if (config.contains("torch_dtype") || !config.contains("dtype")) {
      config["torch_dtype"] = dtype_name;
    }
    return config.dump(2) + "\n";
  }
  return HfConfigForModel(model, dtype);
}

std::string HfConfigForModel(LlamaForCausalLMImpl& model, at::ScalarType dtype) {
  LlamaConfig config = model.config();
  config.torch_dtype = TorchDtypeName(dtype);
  const auto buffers = model.named_buffers(/*recurse=*/false);
  if (const at::Tensor* inv_freq = buffers.find("inv_freq")) {
    config.rope_scaling = RopeScalingForFrequencies(config, *inv_freq);
  }
  return HfConfigJson(config).dump(2) + "\n";
}

}  // namespace diablo::model
