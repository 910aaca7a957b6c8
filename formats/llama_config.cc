// Reading LlamaConfig from the two places users' models describe themselves.
#include "formats/llama_config.h"

#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "formats/gguf.h"

namespace diablo::model {
namespace {

[[noreturn]] void Bad(const std::string& source, const std::string& field, const std::string& why) {
  throw std::invalid_argument(source + ": " + field + " " + why);
}

template <typename T>
T Required(const nlohmann::json& j, const char* key, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) Bad(source, key, "is missing");
  try {
    return j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    Bad(source, key, "has the wrong type");
  }
}

template <typename T>
T Optional(const nlohmann::json& j, const char* key, T fallback, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return Required<T>(j, key, source);
}

// eos_token_id may be one id or a list (Llama 3.1); the first is the default stop.
int64_t FirstId(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return -1;
  if (j[key].is_array()) return j[key].empty() ? -1 : j[key][0].get<int64_t>();
  return j[key].get<int64_t>();
}

// Reads a rope scaling object; leaves `out` alone for the default rope.
void ReadRopeScaling(const nlohmann::json& j, const std::string& source, RopeScaling& out) {
  const std::string type = j.contains("rope_type")
                               ? Optional<std::string>(j, "rope_type", "", source)
                               : Optional<std::string>(j, "type", "", source);
  if (type.empty() || type == "default") return;
  out.type = type;
  out.factor = Optional<double>(j, "factor", 1.0, source);
  out.low_freq_factor = Optional<double>(j, "low_freq_factor", 1.0, source);
  out.high_freq_factor = Optional<double>(j, "high_freq_factor", 4.0, source);
  out.original_max_position_embeddings =
      Optional<int64_t>(j, "original_max_position_embeddings", 8192, source);
}

}  // namespace

void LlamaConfig::Validate(const std::string& source) const {
  static const std::set<std::string> kSupported = {"LlamaForCausalLM", "MistralForCausalLM",
                                                   "Qwen2ForCausalLM"};
  if (!kSupported.count(architecture)) {
    Bad(source, "architectures",
        "'" + architecture +
            "' is not supported (supported: LlamaForCausalLM, "
            "MistralForCausalLM, Qwen2ForCausalLM)");
  }
  auto positive = [&](int64_t v, const char* name) {
    if (v <= 0) Bad(source, name, "must be positive, got " + std::to_string(v));
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(num_key_value_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  if (num_attention_heads % num_key_value_heads != 0) {
    Bad(source, "num_key_value_heads", "must divide num_attention_heads");
  }
  if (head_dim % 2 != 0) Bad(source, "head_dim", "must be even for rotary embeddings");
  if (!rope_scaling.type.empty() && rope_scaling.type != "llama3") {
    Bad(source, "rope_scaling.rope_type",
        "'" + rope_scaling.type + "' is not supported (only \"llama3\")");
  }
}

LlamaConfig ConfigFromHfJson(const nlohmann::json& j, const std::string& source) {
  LlamaConfig c;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty()) {
    c.architecture = j["architectures"][0].get<std::string>();
  } else {
    std::string type = Optional<std::string>(j, "model_type", "llama", source);
    c.architecture = type == "qwen2"     ? "Qwen2ForCausalLM"
                     : type == "mistral" ? "MistralForCausalLM"
                                         : "LlamaForCausalLM";
  }
  c.vocab_size = Required<int64_t>(j, "vocab_size", source);
  c.hidden_size = Required<int64_t>(j, "hidden_size", source);
  c.intermediate_size = Required<int64_t>(j, "intermediate_size", source);
  c.num_hidden_layers = Required<int64_t>(j, "num_hidden_layers", source);
  c.num_attention_heads = Required<int64_t>(j, "num_attention_heads", source);
  c.num_key_value_heads =
      Optional<int64_t>(j, "num_key_value_heads", c.num_attention_heads, source);
  c.head_dim = c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
  c.head_dim = Optional<int64_t>(j, "head_dim", c.head_dim, source);
  c.max_position_embeddings = Optional<int64_t>(j, "max_position_embeddings", 2048, source);
  c.rms_norm_eps = Optional<double>(j, "rms_norm_eps", 1e-6, source);
  c.rope_theta = Optional<double>(j, "rope_theta", 10000.0, source);
  // Newer transformers nest rope_theta and the scaling in rope_parameters;
  // older configs have a rope_scaling object ("type" before "rope_type").
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    c.rope_theta = Optional<double>(j["rope_parameters"], "rope_theta", c.rope_theta, source);
    ReadRopeScaling(j["rope_parameters"], source, c.rope_scaling);
  }
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    ReadRopeScaling(j["rope_scaling"], source, c.rope_scaling);
  }
  c.tie_word_embeddings = Optional<bool>(j, "tie_word_embeddings", false, source);
  const bool attention_bias = Optional<bool>(j, "attention_bias", false, source);
  c.qkv_bias = c.architecture == "Qwen2ForCausalLM" || attention_bias;
  c.o_bias = c.architecture != "Qwen2ForCausalLM" && attention_bias;
  c.mlp_bias = Optional<bool>(j, "mlp_bias", false, source);
  c.bos_token_id = FirstId(j, "bos_token_id");
  c.eos_token_id = FirstId(j, "eos_token_id");
  if (j.contains("dtype") && j["dtype"].is_string()) {
    c.torch_dtype = j["dtype"].get<std::string>();
  } else if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) {
    c.torch_dtype = j["torch_dtype"].get<std::string>();
  }
  c.Validate(source);
  return c;
}

LlamaConfig ConfigFromGguf(const GgufFile& file, const std::string& source) {
  const std::string arch = file.GetString("general.architecture");
  LlamaConfig c;
  if (arch == "llama") {
    c.architecture = "LlamaForCausalLM";
  } else if (arch == "qwen2") {
    c.architecture = "Qwen2ForCausalLM";
    c.qkv_bias = true;
  } else {
    Bad(source, "general.architecture",
        "'" + arch + "' is not supported (supported GGUF architectures: llama, qwen2)");
  }
  c.hidden_size = static_cast<int64_t>(file.GetUint(arch + ".embedding_length"));
  c.intermediate_size = static_cast<int64_t>(file.GetUint(arch + ".feed_forward_length"));
  c.num_hidden_layers = static_cast<int64_t>(file.GetUint(arch + ".block_count"));
  c.num_attention_heads = static_cast<int64_t>(file.GetUint(arch + ".attention.head_count"));
  c.num_key_value_heads = static_cast<int64_t>(
      file.GetUintOr(arch + ".attention.head_count_kv", c.num_attention_heads));
  c.head_dim = c.hidden_size / std::max<int64_t>(c.num_attention_heads, 1);
  c.head_dim = static_cast<int64_t>(file.GetUintOr(arch + ".attention.key_length", c.head_dim));
  c.max_position_embeddings = static_cast<int64_t>(file.GetUintOr(arch + ".context_length", 2048));
  c.rms_norm_eps = file.GetFloatOr(arch + ".attention.layer_norm_rms_epsilon", 1e-6);
  c.rope_theta = file.GetFloatOr(arch + ".rope.freq_base", 10000.0);
  c.vocab_size = file.Has(arch + ".vocab_size")
                     ? static_cast<int64_t>(file.GetUint(arch + ".vocab_size"))
                     : static_cast<int64_t>(file.GetArray("tokenizer.ggml.tokens").size());
  c.tie_word_embeddings = file.FindTensor("output.weight") == nullptr;
  c.bos_token_id = static_cast<int64_t>(file.GetUintOr("tokenizer.ggml.bos_token_id", -1));
  c.eos_token_id = static_cast<int64_t>(file.GetUintOr("tokenizer.ggml.eos_token_id", -1));
  c.torch_dtype = "float32";  // GGUF weights are dequantised (or kept packed) on load
  c.Validate(source);
  return c;
}

}  // namespace diablo::model
