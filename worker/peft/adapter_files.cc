// Saving and loading adapter directories.  The config is translated to and
// from PEFT's LoraConfig vocabulary (or our DiaBlo fields); the weights are
// matched name by name and shape by shape against the injected adapters
// before a single value is copied.
#include "worker/peft/adapter_files.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "diablo/build_info.h"
#include "formats/gguf.h"  // FormatError
#include "formats/safetensors.h"
#include "worker/peft/adapter_layer.h"
#include "worker/peft/diablo_linear.h"
#include "worker/peft/inject.h"
#include "worker/peft/lora_linear.h"
#include "worker/peft/tensor_io.h"

namespace diablo::peft {
namespace {

using Json = nlohmann::json;
using model::FormatError;

constexpr char kLoRAPrefix[] = "base_model.model.";
constexpr char kHint[] = "hint: was this adapter trained on another base model?";

std::string JoinPath(const std::string& dir, const char* name) {
  return (std::filesystem::path(dir) / name).string();
}

std::string ShapeString(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// ---- targets: our syntax <-> PEFT's ----------------------------------------

bool IsPattern(const std::string& target) { return target.rfind("re:", 0) == 0; }

std::string RegexEscape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (std::string_view("\\.^$|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

// PEFT matches a list entry as `path == t or path.endswith("." + t)` and a
// string as re.fullmatch(t, path).  Plain names (our "last component equals")
// fit the list form; once a pattern is involved everything becomes one regex.
Json TargetsToPeft(const std::vector<std::string>& targets) {
  bool any_pattern = std::any_of(targets.begin(), targets.end(), IsPattern);
  if (!any_pattern) return targets;
  if (targets.size() == 1) return targets[0].substr(3);
  std::string regex;
  for (const std::string& t : targets) {
    std::string alternative = IsPattern(t) ? t.substr(3) : "(?:.*\\.)?" + RegexEscape(t);
    regex += (regex.empty() ? "" : "|") + ("(?:" + alternative + ")");
  }
  return regex;
}

std::vector<std::string> TargetsFromPeft(const Json& value) {
  if (value.is_string()) return {"re:" + value.get<std::string>()};
  std::vector<std::string> targets;
  for (const Json& t : value) {
    std::string name = t.get<std::string>();
    // A dotted entry matches a path suffix in PEFT, which a plain name of
    // ours (one component) cannot express.
    targets.push_back(name.find('.') == std::string::npos ? name
                                                          : "re:(?:.*\\.)?" + RegexEscape(name));
  }
  return targets;
}

// ---- config reading ----------------------------------------------------------

class ConfigReader {
 public:
  ConfigReader(const Json& json, const std::string& source) : json_(json), source_(source) {}

  [[noreturn]] void Fail(const std::string& field, const std::string& what) const {
    throw FormatError(source_ + ": field '" + field + "' " + what);
  }
  const Json* Find(const std::string& field) const {
    auto it = json_.find(field);
    return it == json_.end() || it->is_null() ? nullptr : &*it;
  }
  std::string String(const std::string& field, const std::string& fallback) const {
    const Json* v = Find(field);
    if (v == nullptr) return fallback;
    if (!v->is_string()) Fail(field, "must be a string");
    return v->get<std::string>();
  }
  double Number(const std::string& field, double fallback) const {
    const Json* v = Find(field);
    if (v == nullptr) return fallback;
    if (!v->is_number()) Fail(field, "must be a number");
    return v->get<double>();
  }
  int64_t PositiveInt(const std::string& field) const {
    const Json* v = Find(field);
    if (v == nullptr) Fail(field, "is missing");
    if (!v->is_number_integer() || v->get<int64_t>() <= 0)
      Fail(field, "must be a positive integer");
    return v->get<int64_t>();
  }
  bool Bool(const std::string& field, bool fallback) const {
    const Json* v = Find(field);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) Fail(field, "must be true or false");
    return v->get<bool>();
  }
  std::vector<std::string> Targets(bool peft_syntax) const {
    const Json* v = Find("target_modules");
    if (v == nullptr) {
      Fail("target_modules",
           "is missing (PEFT may infer it from the model type; name the layers explicitly)");
    }
    bool strings = v->is_array() &&
                   std::all_of(v->begin(), v->end(), [](const Json& t) { return t.is_string(); });
    if (!(strings && !v->empty()) && !(peft_syntax && v->is_string())) {
      Fail("target_modules", peft_syntax
                                 ? "must be a non-empty list of module names or a regex string"
                                 : "must be a non-empty list of module names or \"re:\" patterns");
    }
    return peft_syntax ? TargetsFromPeft(*v) : v->get<std::vector<std::string>>();
  }
  // Fails unless `field` is absent, null, false or empty: the setting
  // changes what the layer computes and LoRALinear does not implement it.
  void Unsupported(const std::string& field, const std::string& what) const {
    const Json* v = Find(field);
    if (v == nullptr) return;
    bool off =
        (v->is_boolean() && !v->get<bool>()) || ((v->is_object() || v->is_array()) && v->empty());
    if (!off) Fail(field, "asks for " + what + ", which is not supported");
  }

 private:
  const Json& json_;
  const std::string& source_;
};

AdapterConfig LoRAFromJson(const ConfigReader& r) {
  AdapterConfig config;
  config.method = Method::kLoRA;
  config.rank = r.PositiveInt("r");
  config.alpha = r.Number("lora_alpha", 8.0);  // PEFT's default
  config.dropout = r.Number("lora_dropout", 0.0);
  config.base_model = r.String("base_model_name_or_path", "");
  config.target_modules = r.Targets(/*peft_syntax=*/true);
  if (r.Bool("use_rslora", false)) {
    // rsLoRA scales by alpha / sqrt(r); LoRALinear scales by alpha / r.
    config.alpha *= std::sqrt(static_cast<double>(config.rank));
  }
  if (r.String("bias", "none") != "none")
    r.Fail("bias", "asks for trained biases, which are not supported");
  r.Unsupported("use_dora", "DoRA");
  r.Unsupported("fan_in_fan_out", "transposed (Conv1D) weights");
  r.Unsupported("lora_bias", "a bias on lora_B");
  r.Unsupported("rank_pattern", "per-module ranks");
  r.Unsupported("alpha_pattern", "per-module alphas");
  r.Unsupported("modules_to_save", "fully trained extra modules");
  r.Unsupported("layers_to_transform",
                "a subset of layers by index (use a \"re:\" target instead)");
  r.Unsupported("layer_replication", "layer replication");
  r.Unsupported("exclude_modules", "excluded modules");
  r.Unsupported("target_parameters", "adapters on bare parameters");
  r.Unsupported("trainable_token_indices", "trainable token embeddings");
  r.Unsupported("use_qalora", "QALoRA");
  r.Unsupported("alora_invocation_tokens", "activated LoRA");

  // Only the initialisations that rewrite the base weight matter once the
  // trained A and B are loaded; PiSSA/MiLoRA rebuild the same residual weight.
  const Json* init = r.Find("init_lora_weights");
  if (init == nullptr || init->is_boolean()) {
    config.init = LoRAInit::kDefault;
  } else if (init->is_string()) {
    std::string name = init->get<std::string>();
    if (name == "pissa") {
      config.init = LoRAInit::kPiSSA;
    } else if (name == "milora") {
      config.init = LoRAInit::kMiLoRA;
    } else if (name == "gaussian" || name == "eva" || name == "orthogonal") {
      config.init = LoRAInit::kDefault;  // A and B only; overwritten by the file
    } else {
      r.Fail("init_lora_weights", "is \"" + name +
                                      "\", which changes the base weights in a way "
                                      "this loader cannot reproduce");
    }
  } else {
    r.Fail("init_lora_weights", "must be true, false or a method name");
  }
  return config;
}

AdapterConfig DiaBloFromJson(const ConfigReader& r) {
  AdapterConfig config;
  config.method = Method::kDiaBlo;
  config.blocks = r.PositiveInt("num_blocks");
  config.dropout = r.Number("dropout", 0.0);
  config.base_model = r.String("base_model_name_or_path", "");
  config.target_modules = r.Targets(/*peft_syntax=*/false);
  return config;
}

// ---- tensors of the injected adapters -------------------------------------

// One tensor the file must hold for one injected adapter.
struct Slot {
  std::string module;  // dotted path of the layer
  std::string role;    // "block_A", "lora_A", "lora_B"
  at::Tensor parameter;
  AdapterLayer* layer = nullptr;
  std::string geometry;  // the layer's sizes, for messages
};

std::map<std::string, Slot> ExpectedTensors(torch::nn::Module& model) {
  std::map<std::string, Slot> slots;
  for (const InjectedAdapter& a : FindAdapters(model)) {
    if (auto* d = dynamic_cast<DiaBloLinearImpl*>(a.module.get())) {
      const kernels::BlockLayout& l = d->layout();
      std::string geometry = "in=" + std::to_string(l.in) + ", out=" + std::to_string(l.out) +
                             ", N=" + std::to_string(d->requested_blocks());
      slots[a.path + ".block_A"] = {a.path, "block_A", d->block_A(), a.layer, geometry};
    } else if (auto* lora = dynamic_cast<LoRALinearImpl*>(a.module.get())) {
      std::string geometry = "in=" + std::to_string(lora->in_features()) +
                             ", out=" + std::to_string(lora->out_features()) +
                             ", r=" + std::to_string(lora->rank());
      std::string base = kLoRAPrefix + a.path;
      slots[base + ".lora_A.weight"] = {a.path, "lora_A", lora->lora_A(), a.layer, geometry};
      slots[base + ".lora_B.weight"] = {a.path, "lora_B", lora->lora_B(), a.layer, geometry};
    } else {
      throw std::logic_error("adapter layer '" + a.path + "' is neither DiaBlo nor LoRA");
    }
  }
  return slots;
}

// "'a', 'b', 'c' and 4 more"
std::string SomeNames(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < 3; ++i) out += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > 3) out += " and " + std::to_string(names.size() - 3) + " more";
  return out;
}

}  // namespace

std::string AdapterConfigToJson(const AdapterConfig& config) {
  ValidateAdapterConfig(config);
  Json j;
  j["task_type"] = "CAUSAL_LM";
  j["inference_mode"] = true;
  j["base_model_name_or_path"] =
      config.base_model.empty() ? Json(nullptr) : Json(config.base_model);
  j["revision"] = nullptr;
  if (config.method == Method::kDiaBlo) {
    j["peft_type"] = "DIABLO";
    j["method"] = FineTuneMethodName(config.method);
    j["num_blocks"] = config.blocks;
    j["target_modules"] = config.target_modules;
    j["dropout"] = config.dropout;
    j["diablo_version"] = kVersion;
    return j.dump(2) + "\n";
  }
  j["peft_type"] = "LORA";
  j["r"] = config.rank;
  // PEFT types lora_alpha as int; keep integral values integral.
  if (config.alpha == std::floor(config.alpha) && std::fabs(config.alpha) < 1e15) {
    j["lora_alpha"] = static_cast<int64_t>(config.alpha);
  } else {
    j["lora_alpha"] = config.alpha;
  }
  j["lora_dropout"] = config.dropout;
  j["target_modules"] = TargetsToPeft(config.target_modules);
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["use_rslora"] = false;
  j["use_dora"] = false;
  j["lora_bias"] = false;
  j["modules_to_save"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["exclude_modules"] = nullptr;
  j["rank_pattern"] = Json::object();
  j["alpha_pattern"] = Json::object();
  // PEFT rebuilds PiSSA's residual weight from "pissa" on load; it has no
  // MiLoRA and fails loudly on "milora" rather than load a wrong model.
  if (config.init == LoRAInit::kDefault) {
    j["init_lora_weights"] = true;
  } else {
    j["init_lora_weights"] = LoRAInitName(config.init);
  }
  return j.dump(2) + "\n";
}

AdapterConfig AdapterConfigFromJson(std::string_view text, const std::string& source) {
  Json json;
  try {
    json = Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    throw FormatError(source + ": not valid JSON (" + e.what() + ")");
  }
  if (!json.is_object()) throw FormatError(source + ": not a JSON object");
  ConfigReader r(json, source);
  std::string type = r.String("peft_type", "");
  std::string method = r.String("method", "");
  AdapterConfig config;
  if (type == "LORA") {
    config = LoRAFromJson(r);
  } else if (type == "DIABLO" || (type.empty() && method == "diablo")) {
    config = DiaBloFromJson(r);
  } else {
    r.Fail("peft_type", "is \"" + type + "\"; only \"LORA\" and \"DIABLO\" adapters are supported");
  }
  try {
    ValidateAdapterConfig(config);
  } catch (const std::invalid_argument& e) {
    throw FormatError(source + ": " + e.what());
  }
  return config;
}

AdapterConfig ReadAdapterConfig(const std::string& dir) {
  std::string path = JoinPath(dir, kAdapterConfigFile);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError(path + ": cannot open (is " + dir + " an adapter directory?)");
  std::stringstream text;
  text << in.rdbuf();
  return AdapterConfigFromJson(text.str(), path);
}

void SaveAdapter(torch::nn::Module& model, const AdapterConfig& config, const std::string& dir) {
  ValidateAdapterConfig(config);
  std::map<std::string, Slot> slots = ExpectedTensors(model);
  if (slots.empty())
    throw std::invalid_argument("the model carries no adapters to save; inject them first");
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, slot] : slots) {
    auto fail = [&](const std::string& what) {
      throw std::invalid_argument("cannot save adapter of '" + slot.module + "': " + what);
    };
    if (slot.layer->method() != config.method) {
      fail(std::string("the layer carries ") + FineTuneMethodName(slot.layer->method()) +
           " but the config says " + FineTuneMethodName(config.method));
    }
    if (auto* d = dynamic_cast<DiaBloLinearImpl*>(slot.layer)) {
      if (d->requested_blocks() != config.blocks) {
        fail("the layer has " + std::to_string(d->requested_blocks()) + " blocks, the config " +
             std::to_string(config.blocks));
      }
    }
    if (auto* l = dynamic_cast<LoRALinearImpl*>(slot.layer)) {
      if (l->rank() != config.rank || l->alpha() != config.alpha) {
        fail("the layer has rank " + std::to_string(l->rank()) + " and alpha " +
             std::to_string(l->alpha()) + ", the config rank " + std::to_string(config.rank) +
             " and alpha " + std::to_string(config.alpha));
      }
    }
    tensors.emplace(name, slot.parameter.detach().to(at::kFloat));
  }
  std::filesystem::create_directories(dir);
  SaveSafetensors(JoinPath(dir, kAdapterWeightsFile), tensors,
                  {{"format", "pt"},
                   {"method", FineTuneMethodName(config.method)},
                   {"diablo_version", kVersion}});
  std::string json = AdapterConfigToJson(config);
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(json.data()), json.size());
  model::WriteFileAtomically(JoinPath(dir, kAdapterConfigFile), std::span(&bytes, 1));
}

void LoadAdapterTensors(torch::nn::Module& model, const std::map<std::string, at::Tensor>& tensors,
                        const std::string& source) {
  std::map<std::string, Slot> slots = ExpectedTensors(model);
  if (slots.empty())
    throw std::invalid_argument("the model carries no adapters to load into; inject them first");
  auto fail = [&](const std::string& what) {
    throw FormatError(source + ": the adapter does not fit this model: " + what);
  };

  std::vector<std::string> unknown, missing;
  for (const auto& [name, tensor] : tensors) {
    if (!slots.count(name)) unknown.push_back(name);
  }
  for (const auto& [name, slot] : slots) {
    if (!tensors.count(name)) missing.push_back(name);
  }
  if (!unknown.empty()) {
    bool diablo_file = unknown[0].ends_with(".block_A");
    bool lora_model = slots.begin()->second.role != "block_A";
    std::string why = diablo_file == lora_model
                          ? std::string(" (the file holds ") + (diablo_file ? "DiaBlo" : "LoRA") +
                                " tensors, the model carries " + (lora_model ? "LoRA" : "DiaBlo") +
                                " adapters)"
                          : "";
    fail("tensor " + SomeNames(unknown) + " belongs to no adapter of the model" + why + "; " +
         kHint);
  }
  if (!missing.empty()) fail("the file lacks " + SomeNames(missing) + "; " + kHint);

  std::vector<std::pair<const Slot*, at::Tensor>> values;
  for (const auto& [name, tensor] : tensors) {
    const Slot& slot = slots.at(name);
    if (!tensor.sizes().equals(slot.parameter.sizes())) {
      fail("module '" + slot.module + "': " + slot.role + " expected " +
           ShapeString(slot.parameter.sizes()) + " (" + slot.geometry + "), found " +
           ShapeString(tensor.sizes()) + "; " + kHint);
    }
    if (!at::isFloatingType(tensor.scalar_type())) {
      fail("tensor '" + name + "' has type " + c10::toString(tensor.scalar_type()) +
           "; adapters are floating point");
    }
    at::Tensor value = tensor.to(slot.parameter.device(), slot.parameter.scalar_type());
    if (!at::isfinite(value).all().item<bool>())
      fail("tensor '" + name + "' holds NaN or infinite values");
    values.emplace_back(&slot, value);
  }

  // Everything checked: copy.  A merged layer holds its old adapter inside
  // the weight, so take it out first and fold the new one in afterwards.
  std::vector<AdapterLayer*> remerge;
  for (const auto& [name, slot] : slots) {
    if (slot.layer->merged() &&
        std::find(remerge.begin(), remerge.end(), slot.layer) == remerge.end()) {
      slot.layer->unmerge();
      remerge.push_back(slot.layer);
    }
  }
  {
    c10::NoGradGuard no_grad;
    for (auto& [slot, value] : values) slot->parameter.copy_(value);
  }
  for (AdapterLayer* layer : remerge) layer->merge();
}

void LoadAdapterWeights(torch::nn::Module& model, const std::string& dir) {
  std::string path = JoinPath(dir, kAdapterWeightsFile);
  LoadAdapterTensors(model, LoadSafetensors(path), path);
}

AdapterConfig LoadAdapter(torch::nn::Module& model, const std::string& dir) {
  AdapterConfig config = ReadAdapterConfig(dir);
  if (!FindAdapters(model).empty()) {
    throw std::invalid_argument(
        "the model already carries adapters; LoadAdapter injects its own "
        "(use LoadAdapterWeights to fill existing ones)");
  }
  try {
    InjectAdapters(model, config);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(JoinPath(dir, kAdapterConfigFile) + ": " + e.what() + "; " + kHint);
  }
  LoadAdapterWeights(model, dir);
  return config;
}

}  // namespace diablo::peft
