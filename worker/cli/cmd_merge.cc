// `diablo merge`: fold an adapter into its base model and write the result as
// a Hugging Face model directory (config.json, safetensors, tokenizer files)
// that transformers and vLLM load like any other model.
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "formats/staged_directory.h"
#include "worker/cli/commands.h"
#include "worker/model/hf_export.h"
#include "worker/model/load_model.h"
#include "worker/model/save_hf.h"
#include "worker/peft/adapter_files.h"
#include "worker/peft/inject.h"
#include "worker/peft/merge.h"

namespace diablo::cli {
namespace {

namespace fs = std::filesystem;

struct MergeFlags {
  std::string model, adapter, out;
  std::string dtype;  // "" = the source's (float32 for GGUF)
  std::string shard_size = "5GB";
  bool force = false;
};

void Progress(const std::string& line) { std::fprintf(stderr, "diablo merge: %s\n", line.c_str()); }

// "5GB", "500MB", "2GiB", "1000000" (bytes); decimal units as
// save_pretrained's max_shard_size, binary ones with an "i".
uint64_t ParseByteSize(const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit;
  for (char c : text.substr(used)) unit += static_cast<char>(std::toupper(c));
  static const std::pair<const char*, double> kUnits[] = {{"", 1},
                                                          {"B", 1},
                                                          {"KB", 1e3},
                                                          {"MB", 1e6},
                                                          {"GB", 1e9},
                                                          {"TB", 1e12},
                                                          {"KIB", 1024.0},
                                                          {"MIB", 1048576.0},
                                                          {"GIB", 1073741824.0},
                                                          {"TIB", 1099511627776.0}};
  for (const auto& [name, scale] : kUnits) {
    if (used > 0 && unit == name && std::isfinite(value) && value * scale >= 1 &&
        value * scale < 1.8e19) {
      return static_cast<uint64_t>(value * scale);
    }
  }
  throw std::invalid_argument("--shard-size '" + text +
                              "' is not a positive size such as 5GB, 500MB or 2GiB");
}

bool SamePath(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::exists(a, ec) && fs::exists(b, ec) && fs::equivalent(a, b, ec);
}

// The dtype a Hugging Face directory's weights are stored in, from its
// config.json; float32 when it does not say or says something else.
std::string SourceDtype(const std::string& model) {
  if (!fs::is_directory(model)) return "float32";  // GGUF: dequantised values are exact in fp32
  std::ifstream in(fs::path(model) / "config.json");
  const nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (config.is_object() && config.contains(key) && config[key].is_string()) {
      const std::string name = config[key].get<std::string>();
      if (name == "float32" || name == "bfloat16" || name == "float16") return name;
    }
  }
  return "float32";
}

// Checks everything that is cheap to check, so that a mistake costs no
// loading time and leaves nothing behind.
void CheckArguments(const MergeFlags& f) {
  if (!fs::exists(f.model)) {
    throw std::invalid_argument("--model " + f.model +
                                ": no such file or directory (give a .gguf file or a Hugging "
                                "Face model directory)");
  }
  if (!fs::is_directory(f.adapter)) {
    throw std::invalid_argument("--adapter " + f.adapter +
                                ": no such directory (give the adapter directory holding "
                                "adapter_config.json and adapter_model.safetensors)");
  }
  if (SamePath(f.out, f.model) || SamePath(f.out, f.adapter)) {
    throw std::invalid_argument("--out " + f.out +
                                " is the model or adapter being merged; choose another directory");
  }
  model::StagedDirectory::CheckTarget(f.out, f.force);
  peft::ReadAdapterConfig(f.adapter);
}

int RunMerge(const MergeFlags& f) {
  const uint64_t shard_bytes = ParseByteSize(f.shard_size);
  CheckArguments(f);
  const std::string source_dtype = SourceDtype(f.model);
  const at::ScalarType dtype = model::TorchDtypeFromName(f.dtype.empty() ? source_dtype : f.dtype);

  // Tokenizer files first: a vocabulary that cannot be exported fails here,
  // before minutes of loading.
  std::map<std::string, std::string> files = model::HfTokenizerFilesFor(f.model);

  // Merge in the output dtype only when the source already is in it (the
  // merge then rounds once, as from fp32); otherwise in fp32, rounding once
  // on writing.
  model::LoadOptions load;
  load.dtype = fs::is_directory(f.model) && model::TorchDtypeFromName(source_dtype) == dtype
                   ? dtype
                   : at::kFloat;
  Progress("loading " + f.model + " (" + model::TorchDtypeName(load.dtype) + ")");
  model::LoadedModel loaded = model::LoadModel(f.model, load);
  Progress("loading adapter " + f.adapter);
  const peft::AdapterConfig adapter = peft::LoadAdapter(*loaded.model, f.adapter);
  const int merged = peft::MergeAndUnload(*loaded.model);
  if (!peft::FindAdapters(*loaded.model).empty()) {
    throw std::logic_error("adapter layers remain after merging");
  }
  Progress("merged " + std::to_string(merged) + " " + FineTuneMethodName(adapter.method) +
           " layers into the weights");

  files["config.json"] = model::HfConfigFileFor(f.model, *loaded.model, dtype);
  model::SaveHfOptions options;
  options.dtype = dtype;
  options.max_shard_bytes = shard_bytes;
  options.replace = f.force;
  options.progress = Progress;
  model::SaveHfDirectory(*loaded.model, f.out, files, options);
  Progress("wrote " + f.out + " (" + model::TorchDtypeName(dtype) + ")");
  return 0;
}

}  // namespace

Runner RegisterMerge(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "merge",
      "Fold an adapter (DiaBlo or LoRA) into its base model and write a Hugging Face model\n"
      "directory: config.json, safetensors weights and tokenizer files, loadable by\n"
      "transformers and vLLM.  The directory appears complete or not at all.\n\n"
      "Example:\n"
      "  diablo merge --model SmolLM2-135M-Instruct.Q4_1.gguf --adapter out/adapter "
      "--out out/merged");
  auto f = std::make_shared<MergeFlags>();
  cmd->add_option("--model,-m", f->model, "Base model: a .gguf file or a Hugging Face directory")
      ->required();
  cmd->add_option("--adapter", f->adapter,
                  "Adapter directory (adapter_config.json + adapter_model.safetensors)")
      ->required();
  cmd->add_option("--out,-o", f->out, "Directory to create (must not exist, or be empty)")
      ->required();
  cmd->add_option("--dtype", f->dtype,
                  "Dtype of the written weights (default: the source's torch_dtype for a "
                  "Hugging Face directory, float32 for GGUF)")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}));
  cmd->add_option("--shard-size", f->shard_size,
                  "Largest safetensors file; larger models are sharded with "
                  "model.safetensors.index.json")
      ->capture_default_str();
  cmd->add_flag("--force", f->force, "Replace --out if it exists and is not empty");
  return [f] { return RunMerge(*f); };
}

}  // namespace diablo::cli
