// `diablo inspect --model M`: what a model file holds — architecture, sizes,
// weight types, tokenizer, chat template — without loading any weights.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "formats/gguf.h"
#include "worker/cli/commands.h"

namespace diablo::cli {
namespace {

nlohmann::json DescribeGguf(const model::GgufFile& file, const std::string& path) {
  const std::string arch = file.GetString("general.architecture");
  auto arch_uint = [&](const char* key) { return file.GetUintOr(arch + "." + key, 0); };

  uint64_t parameters = 0, weight_bytes = 0;
  std::map<std::string, uint64_t> type_counts;
  for (const auto& t : file.tensors()) {
    parameters += t.elements();
    weight_bytes += t.byte_size;
    ++type_counts[model::TypeInfo(t.type).name];
  }
  uint64_t vocab =
      file.Has("tokenizer.ggml.tokens") ? file.GetArray("tokenizer.ggml.tokens").size() : 0;
  nlohmann::json j;
  j["path"] = path;
  j["format"] = "gguf v" + std::to_string(file.version());
  j["name"] = file.Has("general.name") ? file.GetString("general.name") : "";
  j["architecture"] = arch;
  j["layers"] = arch_uint("block_count");
  j["hidden_size"] = arch_uint("embedding_length");
  j["intermediate_size"] = arch_uint("feed_forward_length");
  j["attention_heads"] = arch_uint("attention.head_count");
  j["kv_heads"] =
      file.GetUintOr(arch + ".attention.head_count_kv", arch_uint("attention.head_count"));
  j["context_length"] = arch_uint("context_length");
  j["rope_theta"] = file.GetFloatOr(arch + ".rope.freq_base", 10000.0);
  j["rms_norm_eps"] = file.GetFloatOr(arch + ".attention.layer_norm_rms_epsilon", 0.0);
  j["vocab_size"] = vocab;
  j["tied_embeddings"] = file.FindTensor("output.weight") == nullptr;
  j["tensors"] = file.tensors().size();
  j["parameters"] = parameters;
  j["weight_bytes"] = weight_bytes;
  j["weight_types"] = type_counts;
  j["tokenizer"] = file.Has("tokenizer.ggml.model") ? file.GetString("tokenizer.ggml.model") : "";
  j["tokenizer_pre"] = file.Has("tokenizer.ggml.pre") ? file.GetString("tokenizer.ggml.pre") : "";
  j["bos_token_id"] = file.GetUintOr("tokenizer.ggml.bos_token_id", 0);
  j["eos_token_id"] = file.GetUintOr("tokenizer.ggml.eos_token_id", 0);
  j["has_chat_template"] = file.Has("tokenizer.chat_template");
  return j;
}

void PrintHuman(const nlohmann::json& j) {
  auto line = [](const char* label, const std::string& value) {
    std::printf("%-18s %s\n", label, value.c_str());
  };
  auto num = [](const nlohmann::json& v) { return v.dump(); };
  line("model", j["path"].get<std::string>());
  line("format", j["format"].get<std::string>());
  if (!j["name"].get<std::string>().empty()) line("name", j["name"].get<std::string>());
  line("architecture", j["architecture"].get<std::string>());
  line("layers", num(j["layers"]));
  line("hidden size", num(j["hidden_size"]));
  line("mlp size", num(j["intermediate_size"]));
  line("attention heads", num(j["attention_heads"]) + " (" + num(j["kv_heads"]) + " key/value)");
  line("context length", num(j["context_length"]));
  line("rope theta", num(j["rope_theta"]));
  line("vocabulary", num(j["vocab_size"]) + " tokens, " + j["tokenizer"].get<std::string>() +
                         (j["tokenizer_pre"].get<std::string>().empty()
                              ? ""
                              : " (pre-tokenizer " + j["tokenizer_pre"].get<std::string>() + ")"));
  line("embeddings", j["tied_embeddings"].get<bool>() ? "tied (lm_head = embed_tokens)" : "untied");
  char params[64];
  std::snprintf(params, sizeof params, "%.1f M in %s tensors, %.1f MiB",
                j["parameters"].get<double>() / 1e6, num(j["tensors"]).c_str(),
                j["weight_bytes"].get<double>() / (1 << 20));
  line("parameters", params);
  std::string types;
  for (auto& [name, count] : j["weight_types"].items()) {
    types += (types.empty() ? "" : ", ") + name + " x" + count.dump();
  }
  line("weight types", types);
  line("chat template", j["has_chat_template"].get<bool>() ? "yes (from the file)" : "none");
}

}  // namespace

Runner RegisterInspect(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "inspect",
      "Describe a model file: architecture, sizes, weight types, tokenizer, chat template.\n"
      "Reads only the header; no weights are loaded.\n\n"
      "Example:\n"
      "  diablo inspect --model SmolLM2-135M-Instruct.Q4_1.gguf --json");
  auto model = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("--model,-m", *model, "Model file (.gguf)")->required()->check(CLI::ExistingPath);
  cmd->add_flag("--json", *json, "Print one JSON object instead of a table");
  return [model, json] {
    if (model->size() < 5 || model->substr(model->size() - 5) != ".gguf") {
      std::fprintf(stderr,
                   "diablo inspect: %s: only GGUF model files (.gguf) can be inspected by this "
                   "version\n",
                   model->c_str());
      return 2;
    }
    model::GgufFile file = model::GgufFile::Open(*model);
    nlohmann::json j = DescribeGguf(file, *model);
    if (*json) {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      PrintHuman(j);
    }
    return 0;
  };
}

}  // namespace diablo::cli
