#include "worker/cli/model_session.h"

#include <stdexcept>

#include "worker/peft/adapter_files.h"

namespace diablo::cli {

void AddModelOptions(CLI::App& cmd, ModelOptions& options) {
  cmd.add_option("--model,-m", options.model, "Model: a .gguf file or a Hugging Face directory")
      ->required()
      ->check(CLI::ExistingPath);
  cmd.add_option("--adapter", options.adapter,
                 "Adapter directory (adapter_config.json + adapter_model.safetensors), "
                 "DiaBlo or LoRA")
      ->check(CLI::ExistingDirectory);
  cmd.add_option("--dtype", options.dtype, "Dtype of the frozen weights in memory")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}))
      ->capture_default_str();
  cmd.add_option("--base-weights", options.base_weights,
                 "packed keeps a GGUF model's Q4_0/Q4_1/Q8_0 weights in their blocks and "
                 "dequantises them per use: less memory, slower (as base_weights in training)")
      ->check(CLI::IsMember({"dense", "packed"}))
      ->capture_default_str();
}

ModelSession OpenModel(const ModelOptions& options) {
  model::LoadOptions load;
  load.dtype = options.dtype == "bfloat16"  ? at::kBFloat16
               : options.dtype == "float16" ? at::kHalf
                                            : at::kFloat;
  load.keep_quantized = options.base_weights == "packed";
  ModelSession session;
  session.loaded = model::LoadModel(options.model, load);
  session.tokenizer = model::LoadTokenizer(options.model);
  if (!options.adapter.empty()) {
    peft::LoadAdapter(*session.loaded.model, options.adapter);
    session.loaded.model->eval();
  }
  return session;
}

}  // namespace diablo::cli
