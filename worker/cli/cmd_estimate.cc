// `diablo estimate`: trainable parameters and training memory of a DiaBlo,
// LoRA or full fine-tune, from config.json or GGUF metadata alone (no weights
// are loaded); the numbers come from spec/estimate.h, as the scheduler's do.
#include <charconv>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "spec/estimate.h"
#include "spec/model_source.h"
#include "worker/cli/commands.h"

namespace diablo::cli {
namespace {

struct EstimateFlags {
  std::string model;
  std::string method = "diablo";
  std::string dtype = "float32";
  bool json = false;
  estimate::EstimateOptions options;  // numbers and targets are parsed straight into it
};

// CLI11's PositiveNumber prints the double range it checks against; this
// says what was wrong in the flag's terms.  Text that is no integer is left
// to CLI11's conversion, which reports it.
CLI::Validator AtLeast(int64_t minimum) {
  return CLI::Validator(
      [minimum](std::string& text) -> std::string {
        int64_t value = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (error != std::errc() || end != text.data() + text.size() || value >= minimum) return "";
        return "must be at least " + std::to_string(minimum) + ", got " + text;
      },
      ">=" + std::to_string(minimum));
}

// 70254592 -> "70,254,592".
std::string Grouped(uint64_t value) {
  std::string digits = std::to_string(value), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string Bytes(uint64_t bytes) {
  char text[32];
  const double mib = static_cast<double>(bytes) / (1 << 20);
  if (mib < 1024) {
    std::snprintf(text, sizeof text, "%.1f MiB", mib);
  } else {
    std::snprintf(text, sizeof text, "%.2f GiB", mib / 1024);
  }
  return text;
}

std::string Percent(double percent) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f%%", percent);
  return text;
}

std::string Joined(const std::vector<std::string>& items) {
  std::string text;
  for (const auto& item : items) text += (text.empty() ? "" : ", ") + item;
  return text;
}

// "gguf" for weights kept as the file stores them, else the dtype's name.
const char* WeightsName(const estimate::EstimateOptions& o) {
  return o.base_weights == BaseWeights::kPacked ? "gguf" : PrecisionDtypeName(o.precision);
}

std::string MethodSummary(const estimate::EstimateOptions& o) {
  switch (o.method) {
    case estimate::Method::kDiaBlo:
      return "diablo, " + std::to_string(o.blocks) + " blocks requested";
    case estimate::Method::kLoRA:
      return "lora, rank " + std::to_string(o.rank);
    case estimate::Method::kFull:
      return "full fine-tuning";
  }
  return "";
}

nlohmann::json ToJson(const estimate::ModelSource& source, const estimate::EstimateOptions& o,
                      const estimate::Estimate& e) {
  nlohmann::json j;
  j["model"] = source.path;
  j["format"] = source.format;
  j["architecture"] = source.config.architecture;
  j["method"] = FineTuneMethodName(o.method);
  if (o.method == estimate::Method::kDiaBlo) j["blocks"] = o.blocks;
  if (o.method == estimate::Method::kLoRA) j["rank"] = o.rank;
  if (o.method != estimate::Method::kFull) j["target_modules"] = o.target_modules;
  j["dtype"] = WeightsName(o);
  j["micro_batch"] = o.micro_batch;
  j["seq_len"] = o.seq_len;
  j["label_tokens"] = o.label_tokens > 0 ? o.label_tokens : o.micro_batch * o.seq_len;
  j["gradient_checkpointing"] = o.gradient_checkpointing;
  j["total_parameters"] = e.total_parameters;
  j["trainable_parameters"] = e.trainable_parameters;
  j["trainable_percent"] = e.trainable_percent;
  j["targets"] = nlohmann::json::array();
  for (const auto& t : e.targets) {
    j["targets"].push_back(
        {{"module", t.module}, {"layers", t.layers}, {"parameters", t.parameters}});
  }
  const estimate::MemoryEstimate& m = e.memory;
  j["memory_bytes"] = {{"frozen_weights", m.frozen_weights}, {"trainable", m.trainable},
                       {"gradients", m.gradients},           {"optimizer", m.optimizer},
                       {"activations", m.activations},       {"total", m.total}};
  return j;
}

void PrintHuman(const estimate::ModelSource& source, const estimate::EstimateOptions& o,
                const estimate::Estimate& e) {
  auto line = [](const char* label, const std::string& value) {
    std::printf("%-22s %s\n", label, value.c_str());
  };
  const model::LlamaConfig& c = source.config;
  line("model", source.path);
  line("architecture", c.architecture + ", " + std::to_string(c.num_hidden_layers) +
                           " layers, hidden " + std::to_string(c.hidden_size) + ", mlp " +
                           std::to_string(c.intermediate_size));
  line("method", MethodSummary(o));
  if (o.method != estimate::Method::kFull) line("targets", Joined(o.target_modules));
  line("model parameters", Grouped(e.total_parameters));
  line("trainable parameters",
       Grouped(e.trainable_parameters) + " (" + Percent(e.trainable_percent) + ")");

  std::printf("\n%-22s %8s %16s\n", "module", "layers", "trainable");
  for (const auto& t : e.targets) {
    std::printf("%-22s %8lld %16s\n", t.module.c_str(), static_cast<long long>(t.layers),
                Grouped(t.parameters).c_str());
  }

  const int64_t labels = o.label_tokens > 0 ? o.label_tokens : o.micro_batch * o.seq_len;
  std::printf("\nmemory: micro-batch %lld x %lld tokens (%lld with labels), %s weights, %s\n",
              static_cast<long long>(o.micro_batch), static_cast<long long>(o.seq_len),
              static_cast<long long>(labels), WeightsName(o),
              o.gradient_checkpointing ? "gradient checkpointing" : "no gradient checkpointing");
  const estimate::MemoryEstimate& m = e.memory;
  auto memory = [](const char* label, uint64_t bytes, const char* note = "") {
    std::printf("  %-20s %12s%s\n", label, Bytes(bytes).c_str(), note);
  };
  memory("frozen weights", m.frozen_weights);
  memory("trainable (fp32)", m.trainable);
  memory("gradients (fp32)", m.gradients);
  memory("AdamW state (fp32)", m.optimizer);
  memory("activations", m.activations);
  memory("total", m.total, "  (plus about 1 GiB for the CUDA context)");
}

}  // namespace

Runner RegisterEstimate(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "estimate",
      "Trainable parameters and training memory of a fine-tune, from the model's config.json\n"
      "or GGUF metadata alone; no weights are loaded.  Targets default to every projection\n"
      "(q,k,v,o,gate,up,down_proj), as training does; the memory formula is in docs/cli.md.\n\n"
      "Examples:\n"
      "  diablo estimate --model Llama-2-7b-hf --blocks 64 --targets q_proj,k_proj,v_proj,"
      "up_proj,down_proj\n"
      "  diablo estimate --model SmolLM2-135M-Instruct.Q4_1.gguf --method lora --rank 16 "
      "--dtype gguf\n"
      "  diablo estimate --model config.json --dtype bfloat16 --micro-batch 4 --seq-len 1024 "
      "--gradient-checkpointing --json");
  auto f = std::make_shared<EstimateFlags>();
  estimate::EstimateOptions& o = f->options;
  cmd->add_option("--model,-m", f->model,
                  "Model: a .gguf file, a Hugging Face model directory or its config.json")
      ->required();
  cmd->add_option("--method", f->method, "diablo, lora or full (every parameter trains)")
      ->check(CLI::IsMember({"diablo", "lora", "full"}))
      ->capture_default_str();
  cmd->add_option("--blocks", o.blocks, "DiaBlo: diagonal blocks per layer (N)")
      ->check(AtLeast(1))
      ->capture_default_str();
  cmd->add_option("--rank", o.rank, "LoRA: rank")->check(AtLeast(1))->capture_default_str();
  cmd->add_option("--targets", o.target_modules,
                  "Comma-separated modules to adapt: names (q_proj) or \"re:<regex>\" on the "
                  "dotted path")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--dtype", f->dtype,
                  "Frozen weights and activations: float32, bfloat16, float16, or gguf (weights "
                  "kept as the GGUF file stores them)")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16", "fp32", "bf16", "fp16", "gguf"}))
      ->capture_default_str();
  cmd->add_option("--micro-batch", o.micro_batch, "Sequences per forward/backward pass")
      ->check(AtLeast(1))
      ->capture_default_str();
  cmd->add_option("--seq-len", o.seq_len, "Tokens per sequence")
      ->check(AtLeast(1))
      ->capture_default_str();
  cmd->add_option("--label-tokens", o.label_tokens,
                  "Positions per micro-batch with labels (logits are computed only there); "
                  "0 = all")
      ->check(AtLeast(0))
      ->capture_default_str();
  cmd->add_flag("--gradient-checkpointing", o.gradient_checkpointing,
                "Recompute each layer in backward instead of keeping its activations");
  cmd->add_flag("--json", f->json, "Print one JSON object instead of a table");
  return [f] {
    const estimate::ModelSource source = estimate::ReadModelSource(f->model);
    estimate::EstimateOptions options = f->options;
    options.method = ParseFineTuneMethod(f->method);
    if (f->dtype == "gguf")
      options.base_weights = BaseWeights::kPacked;
    else
      options.precision = ParsePrecision(f->dtype);
    if (options.base_weights == BaseWeights::kPacked && source.format != "gguf") {
      throw std::invalid_argument("--dtype gguf keeps weights as a GGUF file stores them, but " +
                                  f->model +
                                  " is not a GGUF file; use float32, bfloat16 or "
                                  "float16");
    }
    if (options.label_tokens > options.micro_batch * options.seq_len) {
      throw std::invalid_argument("--label-tokens " + std::to_string(options.label_tokens) +
                                  " is more than the micro-batch holds (--micro-batch x "
                                  "--seq-len = " +
                                  std::to_string(options.micro_batch * options.seq_len) + ")");
    }
    options.stored_weight_bytes = source.stored_weight_bytes;
    const estimate::Estimate e = estimate::EstimateTraining(source.config, options);
    if (f->json) {
      std::printf("%s\n", ToJson(source, options, e).dump(2).c_str());
    } else {
      PrintHuman(source, options, e);
    }
    return 0;
  };
}

}  // namespace diablo::cli
