// Helpers shared by the merge tests: running the `diablo` command and the
// Python reference (merge_reference.py), random models of any LlamaConfig
// written as Hugging Face directories by our own exporter, and listing what a
// test left on disk.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/worker/peft/test_util.h"
#include "worker/model/hf_export.h"
#include "worker/model/llama.h"
#include "worker/model/save_hf.h"

namespace diablo::testing {

// Runs argv[0] with the rest as arguments, stdout and stderr together.
inline CommandResult RunCommand(const std::vector<std::string>& argv) {
  std::string command;
  for (const std::string& a : argv) command += (command.empty() ? "" : " ") + ShellQuote(a);
  command += " 2>&1";
  CommandResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
    result.output.append(buffer.data(), n);
  }
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline CommandResult RunDiablo(std::vector<std::string> args) {
  args.insert(args.begin(), std::string(DIABLO_BINARY_DIR) + "/bin/diablo");
  return RunCommand(args);
}

inline CommandResult RunMergeReference(std::vector<std::string> args) {
  args.insert(args.begin(), {DIABLO_VENV_PYTHON, std::string(DIABLO_SOURCE_DIR) +
                                                     "/tests/worker/peft/merge_reference.py"});
  return RunCommand(args);
}

inline bool HaveVenvPython() {
  return !std::string(DIABLO_VENV_PYTHON).empty() && std::filesystem::exists(DIABLO_VENV_PYTHON);
}

// Names in `dir`, sorted (to show that nothing was left beside a result).
inline std::vector<std::string> Entries(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// A small model of `config` with random weights (norms near one, biases
// non-zero), so that mixing up any two tensors changes the output.
inline model::LlamaForCausalLM RandomModel(const model::LlamaConfig& config, uint64_t seed) {
  model::LlamaForCausalLM m(config);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::NoGradGuard no_grad;
  for (auto& p : m->named_parameters()) {
    at::Tensor noise = at::randn(p.value().sizes(), gen) * 0.05;
    const bool norm = p.key().find("norm") != std::string::npos;
    p.value().copy_(norm ? noise + 1.0 : noise);
    p.value().set_requires_grad(false);
  }
  m->eval();
  return m;
}

// config: vocab 101, hidden 64 (4 heads of 16, 2 KV heads), MLP 96, 2 layers.
inline model::LlamaConfig TinyConfig() {
  model::LlamaConfig c;
  c.vocab_size = 101;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  return c;
}

// `model` as a Hugging Face directory written by our exporter.
inline void WriteHfModel(model::LlamaForCausalLMImpl& model, const std::string& dir,
                         at::ScalarType dtype = at::kFloat) {
  model::SaveHfOptions options;
  options.dtype = dtype;
  model::SaveHfDirectory(model, dir, {{"config.json", model::HfConfigForModel(model, dtype)}},
                         options);
}

}  // namespace diablo::testing
