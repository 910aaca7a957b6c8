// What the model-running verbs (logits, generate) share: the options that
// pick a model, its tokenizer and an optional adapter, and the loaded result.
#pragma once

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "text/tokenizer.h"
#include "worker/model/load_model.h"

namespace diablo::cli {

struct ModelOptions {
  std::string model;    // .gguf file or HF directory
  std::string adapter;  // adapter directory, optional
  std::string dtype = "float32";
  std::string base_weights = "dense";  // or "packed": GGUF blocks stay packed
};

// Adds --model, --adapter, --dtype and --base-weights to `cmd`.
void AddModelOptions(CLI::App& cmd, ModelOptions& options);

struct ModelSession {
  model::LoadedModel loaded;
  std::unique_ptr<model::Tokenizer> tokenizer;
};

// Loads the model, its tokenizer and (if given) the adapter, merged-free: the
// adapter runs as a separate path, exactly as in training.
ModelSession OpenModel(const ModelOptions& options);

}  // namespace diablo::cli
