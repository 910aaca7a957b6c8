// Writing config.json for the model families LlamaConfig covers, and
// recovering Llama 3's rope scaling parameters from rotary frequencies.
#include "worker/model/hf_config_json.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numbers>
#include <stdexcept>
#include <vector>

#include "worker/model/llama.h"

namespace diablo::model {
namespace {

// GGUF stores floats as float32, so 1e-5 arrives as 9.999999747e-06; write
// the shortest decimal that is the same float32 instead.  Values that are
// not exactly a float32 (from a config.json) are kept as they are.
double ShortestFloat32(double value) {
  const float f = static_cast<float>(value);
  if (static_cast<double>(f) != value || !std::isfinite(value)) return value;
  char text[32];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(text, sizeof(text), "%.*g", digits, value);
    const double shorter = std::strtod(text, nullptr);
    if (static_cast<float>(shorter) == f) return shorter;
  }
  return value;
}

std::string ModelType(const std::string& architecture) {
  if (architecture == "Qwen2ForCausalLM") return "qwen2";
  if (architecture == "MistralForCausalLM") return "mistral";
  return "llama";
}

void Refuse(const LlamaConfig& c, const std::string& why) {
  throw std::invalid_argument("config.json for " + c.architecture + ": " + why);
}

bool Matches(const at::Tensor& inv_freq, const LlamaConfig& config) {
  at::Tensor expected = RotaryInverseFrequencies(config).to(at::kDouble);
  at::Tensor actual = inv_freq.to(at::kDouble).reshape(expected.sizes());
  return at::allclose(actual, expected, /*rtol=*/1e-4, /*atol=*/0.0);
}

// Llama 3's scaling keeps frequencies above old_context/high_freq_factor
// wavelengths, divides those below old_context/low_freq_factor by `factor`,
// and in between interpolates with a weight linear in the frequency:
//   smooth = (old_context * f / (2 pi) - low) / (high - low).
// Only the two wavelength bounds matter, so old_context is taken as Llama 3's
// 8192 and low / high are solved from the interpolated frequencies.
std::vector<RopeScaling> Llama3Candidates(const at::Tensor& base, const at::Tensor& actual) {
  const at::Tensor ratio = (base.to(at::kDouble) / actual.to(at::kDouble)).contiguous();
  const at::Tensor freq = base.to(at::kDouble).contiguous();
  const double* r = ratio.data_ptr<double>();
  const double* f = freq.data_ptr<double>();
  const int64_t n = ratio.numel();
  double factor = 1.0;
  for (int64_t i = 0; i < n; ++i) factor = std::max(factor, r[i]);
  RopeScaling standard;
  standard.type = "llama3";
  standard.factor = std::round(factor * 1e4) / 1e4;  // 8 rather than 7.9999995
  std::vector<RopeScaling> candidates = {standard};
  if (factor < 1 + 1e-4) return candidates;  // no slowed frequencies: not Llama 3's scaling

  // Least squares of smooth = a f + b over the interpolated frequencies.
  double sf = 0, ss = 0, sff = 0, sfs = 0;
  int points = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (r[i] < 1 + 1e-4 || r[i] > factor * (1 - 1e-4)) continue;
    const double smooth = (1 / r[i] - 1 / factor) / (1 - 1 / factor);
    sf += f[i], ss += smooth, sff += f[i] * f[i], sfs += f[i] * smooth;
    ++points;
  }
  const double det = points * sff - sf * sf;
  if (points >= 2 && det > 0) {
    const double a = (points * sfs - sf * ss) / det, b = (ss - a * sf) / points;
    const double span = standard.original_max_position_embeddings / (2 * std::numbers::pi * a);
    RopeScaling fitted = standard;
    fitted.factor = factor;
    fitted.low_freq_factor = -b * span;
    fitted.high_freq_factor = fitted.low_freq_factor + span;
    if (a > 0 && fitted.low_freq_factor > 0) {
      RopeScaling rounded = fitted;  // 1 and 4 rather than 0.9999998 and 4.0000003
      rounded.factor = standard.factor;
      for (double* v : {&rounded.low_freq_factor, &rounded.high_freq_factor}) {
        *v = std::round(*v * 1e4) / 1e4;
      }
      candidates.push_back(rounded);
      candidates.push_back(fitted);
    }
  }
  return candidates;
}

}  // namespace

nlohmann::ordered_json HfConfigJson(const LlamaConfig& c) {
  c.Validate("model config");
  const std::string type = ModelType(c.architecture);
  if (c.torch_dtype != "float32" && c.torch_dtype != "bfloat16" && c.torch_dtype != "float16") {
    Refuse(c, "torch_dtype \"" + c.torch_dtype + "\" is not float32, bfloat16 or float16");
  }
  if (type == "llama" && c.qkv_bias != c.o_bias) {
    Refuse(c,
           "attention_bias covers q/k/v and o_proj together; this model has biases on only "
           "some of them");
  }
  if (type == "qwen2" && (!c.qkv_bias || c.o_bias)) {
    Refuse(c, "Qwen2 has biases on q/k/v and none on o_proj");
  }
  if (type == "mistral" && (c.qkv_bias || c.o_bias)) Refuse(c, "Mistral has no attention biases");
  if (type != "llama" && c.mlp_bias) Refuse(c, "only Llama configs can have mlp_bias");

  nlohmann::ordered_json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = ShortestFloat32(c.rms_norm_eps);
  j["rope_theta"] = ShortestFloat32(c.rope_theta);
  if (c.rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else {
    const RopeScaling& rs = c.rope_scaling;
    j["rope_scaling"] = {{"rope_type", rs.type},
                         {"factor", rs.factor},
                         {"low_freq_factor", rs.low_freq_factor},
                         {"high_freq_factor", rs.high_freq_factor},
                         {"original_max_position_embeddings", rs.original_max_position_embeddings}};
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (type == "llama") {
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = c.mlp_bias;
    j["pretraining_tp"] = 1;
  }
  if (type != "llama") {
    // This runtime attends over the whole context; so must the reader.
    j["sliding_window"] = nullptr;
    if (type == "qwen2") j["use_sliding_window"] = false;
  }
  j["attention_dropout"] = 0.0;
  j["initializer_range"] = 0.02;
  j["bos_token_id"] = c.bos_token_id >= 0 ? nlohmann::ordered_json(c.bos_token_id) : nullptr;
  j["eos_token_id"] = c.eos_token_id >= 0 ? nlohmann::ordered_json(c.eos_token_id) : nullptr;
  j["use_cache"] = true;
  j["torch_dtype"] = c.torch_dtype;
  return j;
}

RopeScaling RopeScalingForFrequencies(const LlamaConfig& config, const at::Tensor& inv_freq) {
  if (Matches(inv_freq, config)) return config.rope_scaling;
  const std::string problem =
      "the model's rotary frequencies (e.g. from a GGUF rope_freqs tensor) match no rope "
      "scaling config.json can describe";
  if (!config.rope_scaling.type.empty()) {
    throw std::invalid_argument(problem + " (they differ from its " + config.rope_scaling.type +
                                " scaling)");
  }
  const at::Tensor base = RotaryInverseFrequencies(config);  // unscaled: checked above
  for (const RopeScaling& candidate : Llama3Candidates(base, inv_freq.reshape(base.sizes()))) {
    LlamaConfig scaled = config;
    scaled.rope_scaling = candidate;
    if (Matches(inv_freq, scaled)) return candidate;
  }
  throw std::invalid_argument(problem + " (not Llama 3's \"llama3\" scaling)");
}

}  // namespace diablo::model
