// Parsing and validation of the training configuration.  A small reader
// walks each section, takes the keys it knows and refuses the rest, so a
// misspelt key fails instead of silently training with a default.
#include "spec/train_config.h"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>

#include "spec/yaml_json.h"

namespace diablo::train {
namespace {

using nlohmann::json;

[[noreturn]] void Fail(const std::string& source, const std::string& field,
                       const std::string& problem) {
  throw std::invalid_argument(source + ": " + field + ": " + problem);
}

// One object of the document: typed getters that record which keys were
// read, then Finish() refuses any key left over.
class Section {
 public:
  Section(const json& node, std::string path, const std::string& source)
      : node_(node), path_(std::move(path)), source_(source) {
    if (!node_.is_object())
      Fail(source_, path_.empty() ? "(top level)" : path_, "must be a mapping");
  }

  std::string Field(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }
  bool Has(const std::string& key) const { return node_.contains(key) && !node_.at(key).is_null(); }
  const json* Get(const std::string& key) {
    seen_.insert(key);
    return Has(key) ? &node_.at(key) : nullptr;
  }

  void String(const std::string& key, std::string& out) {
    if (const json* v = Get(key)) {
      if (!v->is_string()) Fail(source_, Field(key), "must be a string, got " + Describe(*v));
      out = v->get<std::string>();
    }
  }
  void Int(const std::string& key, int64_t& out, int64_t min) {
    if (const json* v = Get(key)) {
      // A whole float (4.0) counts; one outside int64 (8e82) must not reach
      // the conversion, which is undefined for it (found by fuzz.job_spec).
      constexpr double kInt64Bound = 9223372036854775808.0;  // 2^63
      const double whole = v->is_number_float() ? v->get<double>() : 0.0;
      if (v->is_number_float() && std::trunc(whole) == whole && whole >= -kInt64Bound &&
          whole < kInt64Bound) {
        out = static_cast<int64_t>(whole);
      } else if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
        Fail(source_, Field(key), "must be an integer below 2^63, got " + Describe(*v));
      } else if (v->is_number_integer()) {
        out = v->get<int64_t>();
      } else {
        Fail(source_, Field(key), "must be an integer, got " + Describe(*v));
      }
      if (out < min)
        Fail(source_, Field(key),
             "must be >= " + std::to_string(min) + ", got " + std::to_string(out));
    }
  }
  void Double(const std::string& key, double& out, double min, double max) {
    if (const json* v = Get(key)) {
      if (!v->is_number()) Fail(source_, Field(key), "must be a number, got " + Describe(*v));
      out = v->get<double>();
      if (!(out >= min && out <= max)) {
        std::ostringstream s;
        s << "must be in [" << min << ", " << max << "], got " << out;
        Fail(source_, Field(key), s.str());
      }
    }
  }
  void Bool(const std::string& key, bool& out) {
    if (const json* v = Get(key)) {
      if (!v->is_boolean()) Fail(source_, Field(key), "must be true or false, got " + Describe(*v));
      out = v->get<bool>();
    }
  }
  void Strings(const std::string& key, std::vector<std::string>& out) {
    if (const json* v = Get(key)) {
      std::vector<std::string> values;
      if (v->is_string()) {  // "q_proj,v_proj" is accepted as a list
        std::stringstream in(v->get<std::string>());
        for (std::string item; std::getline(in, item, ',');)
          if (!item.empty()) values.push_back(item);
      } else if (v->is_array()) {
        for (const json& item : *v) {
          if (!item.is_string()) Fail(source_, Field(key), "must be a list of strings");
          values.push_back(item.get<std::string>());
        }
      } else {
        Fail(source_, Field(key), "must be a list of strings, got " + Describe(*v));
      }
      if (values.empty()) Fail(source_, Field(key), "must not be empty");
      out = values;
    }
  }
  template <typename E>
  void Enum(const std::string& key, E& out, const std::vector<std::pair<std::string, E>>& names) {
    if (const json* v = Get(key)) {
      std::string accepted;
      for (const auto& [name, value] : names) {
        if (v->is_string() && v->get<std::string>() == name) {
          out = value;
          return;
        }
        accepted += (accepted.empty() ? "" : ", ") + name;
      }
      Fail(source_, Field(key), "must be one of " + accepted + ", got " + v->dump());
    }
  }
  Section Child(const std::string& key) {
    static const json kEmpty = json::object();
    const json* v = Get(key);
    return Section(v ? *v : kEmpty, Field(key), source_);
  }

  void Finish() const {
    for (const auto& [key, value] : node_.items()) {
      if (seen_.count(key)) continue;
      std::string known;
      for (const auto& k : seen_) known += (known.empty() ? "" : ", ") + k;
      Fail(source_, Field(key), "unknown key (known keys here: " + known + ")");
    }
  }

 private:
  static std::string Describe(const json& v) {
    std::string text = v.dump();
    if (text.size() > 40) text = text.substr(0, 37) + "...";
    return std::string(v.type_name()) + " " + text;
  }

  const json& node_;
  std::string path_;
  const std::string& source_;
  std::set<std::string> seen_;
};

// (name, value) pairs for Section::Enum from the enum's own name function, so
// each value is spelt once (spec/fine_tune_method.h, spec/precision.h).
template <typename E>
std::vector<std::pair<std::string, E>> NamedValues(const char* (*name)(E),
                                                   std::initializer_list<E> values) {
  std::vector<std::pair<std::string, E>> named;
  for (E value : values) named.emplace_back(name(value), value);
  return named;
}

void ReadMethod(Section s, MethodConfig& m) {
  s.Enum<TrainMethod>("name", m.name,
                      NamedValues(FineTuneMethodName,
                                  {TrainMethod::kDiaBlo, TrainMethod::kLoRA, TrainMethod::kFull}));
  s.Int("blocks", m.blocks, 1);
  s.Int("rank", m.rank, 1);
  s.Double("alpha", m.alpha, 1e-12, 1e12);
  s.Double("dropout", m.dropout, 0.0, 0.999);
  s.String("init", m.init);
  s.Strings("target_modules", m.target_modules);
  s.Finish();
  try {
    peft::ParseLoRAInit(m.init);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(s.Field("init") + ": " + e.what());
  }
}

void ReadData(Section s, DataConfig& d) {
  s.String("train", d.train);
  s.String("eval", d.eval);
  s.Enum<DataFormat>("format", d.format,
                     {{"auto", DataFormat::kAuto},
                      {"alpaca", DataFormat::kAlpaca},
                      {"chat", DataFormat::kChat},
                      {"text", DataFormat::kText}});
  s.String("template", d.chat_template);
  s.Int("max_seq_len", d.max_seq_len, 2);
  s.Enum<Truncation>("truncation", d.truncation,
                     {{"right", Truncation::kRight}, {"drop", Truncation::kDrop}});
  s.Bool("packing", d.packing);
  s.Bool("train_on_prompt", d.train_on_prompt);
  s.Finish();
}

void ReadOptim(Section s, OptimConfig& o) {
  s.Int("epochs", o.epochs, 1);
  s.Int("max_steps", o.max_steps, 0);
  s.Int("global_batch", o.global_batch, 1);
  s.Int("micro_batch", o.micro_batch, 0);
  s.Int("gradient_accumulation", o.gradient_accumulation, 0);
  s.Double("lr", o.lr, 0.0, 10.0);
  if (const json* betas = s.Get("betas")) {
    if (!betas->is_array() || betas->size() != 2 || !(*betas)[0].is_number() ||
        !(*betas)[1].is_number())
      throw std::invalid_argument(s.Field("betas") +
                                  ": must be a list of two numbers, e.g. [0.9, 0.999]");
    o.beta1 = (*betas)[0].get<double>();
    o.beta2 = (*betas)[1].get<double>();
    if (!(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1))
      throw std::invalid_argument(s.Field("betas") + ": both must be in [0, 1)");
  }
  s.Double("eps", o.eps, 0.0, 1.0);
  s.Double("weight_decay", o.weight_decay, 0.0, 10.0);
  s.Enum<Schedule>("scheduler", o.scheduler,
                   {{"constant", Schedule::kConstant},
                    {"linear", Schedule::kLinear},
                    {"cosine", Schedule::kCosine}});
  s.Int("warmup_steps", o.warmup_steps, 0);
  s.Double("warmup_ratio", o.warmup_ratio, 0.0, 1.0);
  s.Double("max_grad_norm", o.max_grad_norm, 0.0, 1e9);
  int64_t seed = static_cast<int64_t>(o.seed);
  s.Int("seed", seed, 0);
  o.seed = static_cast<uint64_t>(seed);
  s.Finish();
}

void ApplyOverride(json& doc, const std::string& assignment) {
  size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw std::invalid_argument("--set " + assignment + ": expected key=value, e.g. optim.lr=3e-4");
  std::string key = assignment.substr(0, eq);
  json* node = &doc;
  std::stringstream path(key);
  std::vector<std::string> parts;
  for (std::string part; std::getline(path, part, '.');) parts.push_back(part);
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (parts[i].empty())
      throw std::invalid_argument("--set " + assignment + ": empty key component");
    json& child = (*node)[parts[i]];
    if (child.is_null()) child = json::object();
    if (!child.is_object())
      throw std::invalid_argument("--set " + assignment + ": " + parts[i] + " is not a section");
    node = &child;
  }
  (*node)[parts.back()] = ParseScalar(assignment.substr(eq + 1));
}

}  // namespace

TrainConfig ConfigFromJson(const json& doc, const std::string& source) {
  TrainConfig c;
  Section top(doc, "", source);
  top.String("model", c.model);
  ReadMethod(top.Child("method"), c.method);
  ReadData(top.Child("data"), c.data);
  ReadOptim(top.Child("optim"), c.optim);
  top.Enum<Precision>(
      "precision", c.precision,
      NamedValues(PrecisionName, {Precision::kFp32, Precision::kBf16, Precision::kFp16}));
  top.Enum<BaseWeights>("base_weights", c.base_weights,
                        NamedValues(BaseWeightsName, {BaseWeights::kDense, BaseWeights::kPacked}));
  top.Bool("gradient_checkpointing", c.gradient_checkpointing);
  top.Int("eval_every", c.eval_every, 0);
  top.Int("save_every", c.save_every, 0);
  top.Int("keep_checkpoints", c.keep_checkpoints, 1);
  top.Int("log_every", c.log_every, 1);
  top.String("output_dir", c.output_dir);
  top.String("init_adapter", c.init_adapter);
  top.String("device", c.device);
  top.Int("threads", c.threads, 0);
  top.Int("collective_timeout_s", c.collective_timeout_s, 1);
  top.String("collective_backend", c.collective_backend);
  top.Finish();

  if (c.model.empty())
    Fail(source, "model", "is required (a .gguf file or a Hugging Face directory)");
  if (c.data.train.empty()) Fail(source, "data.train", "is required (a JSONL file)");
  if (c.output_dir.empty())
    Fail(source, "output_dir", "is required (where checkpoints and the adapter go)");
  if (c.device != "auto" && c.device != "cpu" && c.device != "cuda")
    Fail(source, "device", "must be auto, cpu or cuda, got \"" + c.device + "\"");
  if (c.collective_backend != "auto" && c.collective_backend != "nccl" &&
      c.collective_backend != "gloo")
    Fail(source, "collective_backend",
         "must be auto, nccl or gloo, got \"" + c.collective_backend + "\"");
  if (c.collective_backend == "nccl" && c.device == "cpu")
    Fail(source, "collective_backend", "nccl moves GPU memory only; with device: cpu use gloo");
  const OptimConfig& o = c.optim;
  if (o.micro_batch > o.global_batch)
    Fail(source, "optim.micro_batch",
         "is larger than optim.global_batch (" + std::to_string(o.global_batch) + ")");
  if (o.micro_batch > 0 && o.gradient_accumulation > 0 &&
      o.micro_batch * o.gradient_accumulation > o.global_batch)
    Fail(source, "optim.gradient_accumulation",
         "micro_batch x gradient_accumulation exceeds global_batch");
  if (c.method.name == TrainMethod::kFull && !c.init_adapter.empty())
    Fail(source, "init_adapter", "needs method diablo or lora");
  if (c.base_weights == BaseWeights::kPacked) {
    if (c.method.name == TrainMethod::kFull)
      Fail(source, "base_weights",
           "packed needs method diablo or lora (full fine-tuning trains every weight, which "
           "needs them dense: use base_weights: dense)");
    if (c.method.name == TrainMethod::kLoRA && c.method.init != "default")
      Fail(source, "base_weights",
           "packed needs LoRA init default (" + c.method.init +
               " decomposes the dense weights: use base_weights: dense)");
    if (!c.model.ends_with(".gguf"))
      Fail(source, "base_weights",
           "packed needs a .gguf model with Q4_0, Q4_1 or Q8_0 weights; \"" + c.model +
               "\" is loaded dense (use base_weights: dense)");
  }
  if (c.method.name != TrainMethod::kFull) {
    try {
      peft::ValidateAdapterConfig(ToAdapterConfig(c));
    } catch (const std::invalid_argument& e) {
      Fail(source, "method", e.what());
    }
  }
  return c;
}

json ReadConfigDocument(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument(path + ": cannot open the config file");
  std::stringstream text;
  text << in.rdbuf();
  json doc;
  bool is_json = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
  if (is_json) {
    try {
      doc = json::parse(text.str());
    } catch (const json::parse_error& e) {
      throw std::invalid_argument(path + ": not valid JSON: " + e.what());
    }
  } else {
    doc = YamlToJson(text.str(), path);
  }
  if (doc.is_null()) doc = json::object();
  for (const std::string& o : overrides) ApplyOverride(doc, o);
  return doc;
}

TrainConfig LoadTrainConfig(const std::string& path, const std::vector<std::string>& overrides) {
  return ConfigFromJson(ReadConfigDocument(path, overrides), path);
}

json ConfigToJson(const TrainConfig& c) {
  const char* formats[] = {"auto", "alpaca", "chat", "text"};
  const char* schedules[] = {"constant", "linear", "cosine"};
  const OptimConfig& o = c.optim;
  return json{
      {"model", c.model},
      {"method",
       {{"name", FineTuneMethodName(c.method.name)},
        {"blocks", c.method.blocks},
        {"rank", c.method.rank},
        {"alpha", c.method.alpha},
        {"dropout", c.method.dropout},
        {"init", c.method.init},
        {"target_modules", c.method.target_modules}}},
      {"data",
       {{"train", c.data.train},
        {"eval", c.data.eval},
        {"format", formats[static_cast<int>(c.data.format)]},
        {"template", c.data.chat_template},
        {"max_seq_len", c.data.max_seq_len},
        {"truncation", c.data.truncation == Truncation::kRight ? "right" : "drop"},
        {"packing", c.data.packing},
        {"train_on_prompt", c.data.train_on_prompt}}},
      {"optim",
       {{"epochs", o.epochs},
        {"max_steps", o.max_steps},
        {"global_batch", o.global_batch},
        {"micro_batch", o.micro_batch},
        {"gradient_accumulation", o.gradient_accumulation},
        {"lr", o.lr},
        {"betas", {o.beta1, o.beta2}},
        {"eps", o.eps},
        {"weight_decay", o.weight_decay},
        {"scheduler", schedules[static_cast<int>(o.scheduler)]},
        {"warmup_steps", o.warmup_steps},
        {"warmup_ratio", o.warmup_ratio},
        {"max_grad_norm", o.max_grad_norm},
        {"seed", o.seed}}},
      {"precision", PrecisionName(c.precision)},
      {"base_weights", BaseWeightsName(c.base_weights)},
      {"gradient_checkpointing", c.gradient_checkpointing},
      {"eval_every", c.eval_every},
      {"save_every", c.save_every},
      {"keep_checkpoints", c.keep_checkpoints},
      {"log_every", c.log_every},
      {"output_dir", c.output_dir},
      {"init_adapter", c.init_adapter},
      {"device", c.device},
      {"threads", c.threads},
      {"collective_timeout_s", c.collective_timeout_s},
      {"collective_backend", c.collective_backend},
  };
}

peft::AdapterConfig ToAdapterConfig(const TrainConfig& c) {
  if (c.method.name == TrainMethod::kFull)
    throw std::invalid_argument("method full trains the whole model and has no adapter");
  peft::AdapterConfig a;
  a.method = c.method.name;
  a.target_modules = c.method.target_modules;
  a.dropout = c.method.dropout;
  a.base_model = c.model;
  a.blocks = c.method.blocks;
  a.rank = c.method.rank;
  a.alpha = c.method.alpha;
  a.init = peft::ParseLoRAInit(c.method.init);
  return a;
}

}  // namespace diablo::train
