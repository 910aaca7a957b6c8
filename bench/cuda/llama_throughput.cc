// Training throughput of whole Llama-shaped models on one CUDA device, with no
// weight files: the shape comes from a Hugging Face config.json, the frozen
// weights are random bf16, and each step trains on one micro-batch of random
// tokens (forward, loss on every position, backward, AdamW on the adapters),
// with DiaBlo and with LoRA of the same trainable size on the same
// projections.  Prints tokens/s and model FLOPs utilisation against the bf16
// matmul rate measured at the start of the same run, on the same device.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>
#include <torch/cuda.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/llama_config.h"
#include "kernels/block_diag.h"
#include "spec/adapter_config.h"
#include "worker/model/llama.h"
#include "worker/model/load_model.h"
#include "worker/peft/inject.h"
#include "worker/train/loss.h"

namespace {

namespace fs = std::filesystem;
using diablo::model::LlamaConfig;

// Exit statuses scripts/gpu-check.sh tells apart.
constexpr int kExitMeasured = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNoCuda = 77;  // the automake convention for "skipped"

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

enum class Checkpointing { kAuto, kOn, kOff };

struct Options {
  std::vector<std::string> configs;
  int64_t seq = 2048;
  int64_t micro_batch = 1;
  int warmup = 2;
  int steps = 4;
  int64_t blocks = 64;
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "up_proj", "down_proj"};
  std::vector<std::string> methods = {"diablo", "lora"};
  Checkpointing checkpointing = Checkpointing::kAuto;
  int64_t matmul_size = 8192;
};

const char kUsage[] =
    "usage: llama_throughput --model-config PATH [--model-config PATH ...] [options]\n"
    "  --model-config PATH   a Hugging Face config.json, or a directory holding one\n"
    "  --seq N               tokens per sequence (default 2048)\n"
    "  --micro-batch N       sequences per step (default 1)\n"
    "  --warmup N            untimed steps first (default 2)\n"
    "  --steps N             timed steps (default 4)\n"
    "  --blocks N            DiaBlo blocks per matrix (default 64)\n"
    "  --targets a,b,...     projections that get adapters (default q_proj,k_proj,v_proj,\n"
    "                        up_proj,down_proj: the paper's LLaMA runs)\n"
    "  --methods a,b         diablo and/or lora (default diablo,lora)\n"
    "  --checkpointing M     auto (on only when a step runs out of memory without), on, off\n"
    "  --matmul-size N       side of the square bf16 matmul that measures the peak (8192)\n"
    "Exit status: 0 measured, 1 failed, 2 bad arguments, 77 no CUDA device.\n";

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

int64_t PositiveInt(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v <= 0)
    throw std::invalid_argument(flag + ": expected a positive integer, got '" + text + "'");
  return v;
}

Options ParseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i], value;
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(kExitMeasured);
    }
    if (const size_t eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      throw std::invalid_argument(flag + ": needs a value");
    }
    if (flag == "--model-config") {
      o.configs.push_back(value);
    } else if (flag == "--seq") {
      o.seq = PositiveInt(flag, value);
    } else if (flag == "--micro-batch") {
      o.micro_batch = PositiveInt(flag, value);
    } else if (flag == "--warmup") {
      o.warmup = static_cast<int>(PositiveInt(flag, value));
    } else if (flag == "--steps") {
      o.steps = static_cast<int>(PositiveInt(flag, value));
    } else if (flag == "--blocks") {
      o.blocks = PositiveInt(flag, value);
    } else if (flag == "--targets") {
      o.targets = SplitList(value);
    } else if (flag == "--methods") {
      o.methods = SplitList(value);
      for (const std::string& m : o.methods)
        if (m != "diablo" && m != "lora")
          throw std::invalid_argument("--methods: '" + m + "' is neither diablo nor lora");
    } else if (flag == "--checkpointing") {
      if (value == "auto") {
        o.checkpointing = Checkpointing::kAuto;
      } else if (value == "on") {
        o.checkpointing = Checkpointing::kOn;
      } else if (value == "off") {
        o.checkpointing = Checkpointing::kOff;
      } else {
        throw std::invalid_argument("--checkpointing: expected auto, on or off, got '" + value +
                                    "'");
      }
    } else if (flag == "--matmul-size") {
      o.matmul_size = PositiveInt(flag, value);
    } else {
      throw std::invalid_argument("unknown option '" + flag + "'");
    }
  }
  if (o.configs.empty()) throw std::invalid_argument("give at least one --model-config");
  if (o.targets.empty()) throw std::invalid_argument("--targets: the list is empty");
  return o;
}

void Synchronize() { AT_CUDA_CHECK(cudaDeviceSynchronize()); }

double FreeDeviceGiB() {
  size_t free = 0, total = 0;
  AT_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return static_cast<double>(free) / kGiB;
}

// The dense bf16 matmul rate of this device: the median of 10 timed products
// of two random n x n matrices (2 n^3 FLOPs each), after 3 warm-up products.
double MeasureMatmulTflops(int64_t n) {
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor a = at::randn({n, n}, bf16), b = at::randn({n, n}, bf16);
  at::Tensor c = at::empty({n, n}, bf16);
  for (int i = 0; i < 3; ++i) at::mm_out(c, a, b);
  Synchronize();
  std::vector<double> tflops;
  for (int i = 0; i < 10; ++i) {
    const auto start = std::chrono::steady_clock::now();
    at::mm_out(c, a, b);
    Synchronize();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    tflops.push_back(2.0 * static_cast<double>(n) * static_cast<double>(n) *
                     static_cast<double>(n) / s / 1e12);
  }
  std::sort(tflops.begin(), tflops.end());
  return tflops[tflops.size() / 2];
}

struct Shape {
  std::string name;
  LlamaConfig config;
};

Shape ReadShape(const std::string& path) {
  fs::path file = path;
  if (fs::is_directory(file)) file /= "config.json";
  std::ifstream in(file);
  if (!in)
    throw std::invalid_argument(file.string() +
                                ": cannot read (give a config.json or a directory holding one)");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(file.string() + ": not JSON: " + e.what());
  }
  const std::string name = file.parent_path().filename().string();
  return {name.empty() ? file.string() : name,
          diablo::model::ConfigFromHfJson(json, file.string())};
}

// Sizes [in, out] of one decoder layer's projections, by module name.
std::map<std::string, std::pair<int64_t, int64_t>> ProjectionSizes(const LlamaConfig& c) {
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  return {{"q_proj", {c.hidden_size, q}},
          {"k_proj", {c.hidden_size, kv}},
          {"v_proj", {c.hidden_size, kv}},
          {"o_proj", {q, c.hidden_size}},
          {"gate_proj", {c.hidden_size, c.intermediate_size}},
          {"up_proj", {c.hidden_size, c.intermediate_size}},
          {"down_proj", {c.intermediate_size, c.hidden_size}}};
}

// What one token costs, and what the model holds.
struct Flops {
  double matmul_params = 0;     // every projection of every layer, plus the LM head
  double attention = 0;         // causal attention, forward + backward, per token
  double diablo_params = 0;     // DiaBlo's trainable parameters for the targets
  double lora_in_plus_out = 0;  // sum of (in + out) over the targeted projections
};

Flops CountFlops(const Options& o, const LlamaConfig& c) {
  Flops f;
  const auto sizes = ProjectionSizes(c);
  const double layers = static_cast<double>(c.num_hidden_layers);
  for (const auto& [name, io] : sizes)
    f.matmul_params += layers * static_cast<double>(io.first) * static_cast<double>(io.second);
  f.matmul_params += static_cast<double>(c.vocab_size) * static_cast<double>(c.hidden_size);
  // Per layer and token, QK^T and PV each cost 2 * seq * heads * head_dim
  // FLOPs against every key position; the causal mask halves that on average
  // (2 s h d forward for both), and backward costs twice forward: 6 s h d.
  f.attention = 6.0 * layers * static_cast<double>(o.seq) *
                static_cast<double>(c.num_attention_heads) * static_cast<double>(c.head_dim);
  for (const std::string& target : o.targets) {
    const auto it = sizes.find(target);
    if (it == sizes.end())
      throw std::invalid_argument("--targets: '" + target +
                                  "' is not a Llama projection (q_proj, k_proj, v_proj, o_proj, "
                                  "gate_proj, up_proj, down_proj)");
    const auto [in, out] = it->second;
    f.diablo_params +=
        layers *
        static_cast<double>(diablo::kernels::BlockLayout::For(in, out, o.blocks).parameters());
    f.lora_in_plus_out += layers * static_cast<double>(in + out);
  }
  return f;
}

// The model with random frozen weights, built on the device in bf16 (norms
// fp32, as the loaders keep them) without a CPU copy of the whole model.
diablo::model::LlamaForCausalLM RandomModel(const Shape& shape) {
  diablo::model::LlamaForCausalLM model{nullptr};
  {
    diablo::model::DeferWeightAllocation defer;
    model = diablo::model::LlamaForCausalLM(shape.config);
  }
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  std::map<std::string, at::Tensor> weights;
  for (const auto& p : model->named_parameters()) {
    if (p.key().find("norm.weight") != std::string::npos)
      weights[p.key()] = at::ones(p.value().sizes(), bf16.dtype(at::kFloat));
    else
      weights[p.key()] = at::randn(p.value().sizes(), bf16).mul_(0.02);
  }
  diablo::model::AssignWeights(*model, std::move(weights), shape.name + " (random weights)",
                               at::kBFloat16, diablo::model::WeightSource::kOwned);
  model->to(at::kCUDA);
  return model;
}

struct Measured {
  std::string method;
  int64_t trainable = 0;
  bool checkpointing = false;
  double step_s = 0;
  double peak_gib = 0;
};

// warmup + steps training steps; returns the median seconds of the timed ones.
double TimeSteps(const Options& o, diablo::model::LlamaForCausalLMImpl& model,
                 torch::optim::AdamW& optimizer, const diablo::train::MicroBatch& batch) {
  std::vector<double> seconds;
  for (int i = 0; i < o.warmup + o.steps; ++i) {
    Synchronize();
    const auto start = std::chrono::steady_clock::now();
    optimizer.zero_grad();
    at::Tensor loss = diablo::train::LossSum(model, batch);
    (loss / static_cast<double>(batch.targets.numel())).backward();
    optimizer.step();
    Synchronize();
    if (i >= o.warmup)
      seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

std::optional<Measured> MeasureMethod(const Options& o, const Shape& shape,
                                      const std::string& method, int64_t lora_rank) {
  Measured m;
  m.method = method == "diablo" ? "DiaBlo N=" + std::to_string(o.blocks)
                                : "LoRA r=" + std::to_string(lora_rank);
  std::vector<bool> modes;
  if (o.checkpointing == Checkpointing::kAuto) modes = {false, true};
  if (o.checkpointing == Checkpointing::kOff) modes = {false};
  if (o.checkpointing == Checkpointing::kOn) modes = {true};
  for (const bool checkpointing : modes) {
    try {
      diablo::model::LlamaForCausalLM model = RandomModel(shape);
      diablo::peft::AdapterConfig adapter;
      adapter.method =
          method == "diablo" ? diablo::peft::Method::kDiaBlo : diablo::peft::Method::kLoRA;
      adapter.target_modules = o.targets;
      adapter.blocks = o.blocks;
      adapter.rank = lora_rank;
      adapter.alpha = 2.0 * static_cast<double>(lora_rank);
      diablo::peft::InjectAdapters(*model, adapter);
      model->to(at::kCUDA);
      model->set_gradient_checkpointing(checkpointing);
      model->train();
      m.trainable = diablo::peft::CountTrainableParameters(*model);
      std::vector<at::Tensor> params;
      for (const auto& p : model->parameters())
        if (p.requires_grad()) params.push_back(p);
      torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(1e-4));

      const auto longs = at::TensorOptions().dtype(at::kLong).device(at::kCUDA);
      diablo::train::MicroBatch batch;
      batch.ids = at::randint(shape.config.vocab_size, {o.micro_batch, o.seq}, longs);
      // Every position but each row's last predicts the next token.
      const at::Tensor flat = at::arange(o.micro_batch * o.seq, longs);
      batch.positions = flat.masked_select(flat.remainder(o.seq) != o.seq - 1);
      batch.targets = batch.ids.reshape({-1}).index_select(0, batch.positions + 1);

      c10::cuda::CUDACachingAllocator::resetPeakStats(c10::cuda::current_device());
      m.step_s = TimeSteps(o, *model, optimizer, batch);
      m.peak_gib = static_cast<double>(
                       c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device())
                           .allocated_bytes[0]
                           .peak) /
                   kGiB;
      m.checkpointing = checkpointing;
      return m;
    } catch (const c10::OutOfMemoryError&) {
      c10::cuda::CUDACachingAllocator::emptyCache();
      std::printf("  %s on %s: out of memory with gradient checkpointing %s%s\n", m.method.c_str(),
                  shape.name.c_str(), checkpointing ? "on" : "off",
                  checkpointing || modes.size() == 1 ? "" : "; again with it on");
    }
  }
  return std::nullopt;
}

void PrintRow(const Shape& shape, const Flops& f, const Options& o, const Measured& m,
              double peak_tflops) {
  const double tokens = static_cast<double>(o.micro_batch * o.seq);
  const double tokens_per_s = tokens / m.step_s;
  // Model FLOPs as in the PaLM paper's MFU: 6 per weight per token (forward 2,
  // backward 4) plus attention, as if every weight trained.
  const double model_flops = 6.0 * f.matmul_params + f.attention;
  // What a step with a frozen base must compute: no weight gradient for the
  // frozen matrices (4 per weight), the adapter's 6 per trainable parameter.
  const double needed_flops =
      4.0 * f.matmul_params + f.attention + 6.0 * static_cast<double>(m.trainable);
  std::printf("  %-13s %-14s %12lld %5s %8.3f %10.0f %8.1f%% %8.1f%% %9.1f\n", shape.name.c_str(),
              m.method.c_str(), static_cast<long long>(m.trainable), m.checkpointing ? "on" : "off",
              m.step_s, tokens_per_s, 100.0 * model_flops * tokens_per_s / (peak_tflops * 1e12),
              100.0 * needed_flops * tokens_per_s / (peak_tflops * 1e12), m.peak_gib);
}

int Run(const Options& o) {
  at::globalContext().setAllowTF32CuBLAS(false);
  std::vector<Shape> shapes;
  for (const std::string& path : o.configs) shapes.push_back(ReadShape(path));

  const double peak = MeasureMatmulTflops(o.matmul_size);
  std::printf("llama_throughput on %s: bf16 matmul %lldx%lldx%lld: %.1f TFLOP/s (median of 10)\n",
              at::cuda::getCurrentDeviceProperties()->name, static_cast<long long>(o.matmul_size),
              static_cast<long long>(o.matmul_size), static_cast<long long>(o.matmul_size), peak);
  std::printf(
      "  %lld x %lld tokens per step, median of %d steps after %d warm-up; random bf16 weights, "
      "adapters fp32 on %zu projection kinds\n",
      static_cast<long long>(o.micro_batch), static_cast<long long>(o.seq), o.steps, o.warmup,
      o.targets.size());
  std::printf("  %-13s %-14s %12s %5s %8s %10s %9s %9s %9s\n", "model", "method", "trainable",
              "ckpt", "step_s", "tokens/s", "MFU", "MFU-frzn", "peak_GiB");

  bool all_measured = true;
  for (const Shape& shape : shapes) {
    const Flops f = CountFlops(o, shape.config);
    const int64_t lora_rank =
        std::max<int64_t>(1, std::llround(f.diablo_params / f.lora_in_plus_out));
    // Frozen bf16 weights, plus fp32 adapters with their gradient and two
    // AdamW moments, must fit before anything is tried.
    const double embed = static_cast<double>(shape.config.vocab_size * shape.config.hidden_size);
    const double weights_gib =
        (2.0 * (f.matmul_params + (shape.config.tie_word_embeddings ? 0.0 : embed)) +
         16.0 * f.diablo_params) /
        kGiB;
    const double free_gib = FreeDeviceGiB();
    if (weights_gib > 0.9 * free_gib) {
      std::printf("  %-13s skipped: its weights and adapters need %.1f GiB, %.1f GiB is free\n",
                  shape.name.c_str(), weights_gib, free_gib);
      all_measured = false;
      continue;
    }
    std::vector<Measured> rows;
    for (const std::string& method : o.methods) {
      std::optional<Measured> m = MeasureMethod(o, shape, method, lora_rank);
      c10::cuda::CUDACachingAllocator::emptyCache();
      if (!m) {
        all_measured = false;
        continue;
      }
      PrintRow(shape, f, o, *m, peak);
      rows.push_back(*m);
    }
    if (rows.size() == 2)
      std::printf("  %-13s %s / %s tokens/s: %.3fx\n", shape.name.c_str(), rows[0].method.c_str(),
                  rows[1].method.c_str(), rows[1].step_s / rows[0].step_s);
  }
  std::printf(
      "MFU: (6 x matmul weights + 6 x layers x seq x heads x head_dim) FLOPs per token x "
      "tokens/s / measured bf16 matmul rate;\n"
      "MFU-frzn: the same with 4 x matmul weights (a frozen weight needs no gradient) + 6 x "
      "trainable parameters. Recomputation under checkpointing is not counted.\n");
  return all_measured ? kExitMeasured : kExitFailed;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = ParseOptions(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llama_throughput: %s\n%s", e.what(), kUsage);
    return kExitUsage;
  }
  if (!torch::cuda::is_available()) {
    std::printf(
        "llama_throughput: no CUDA device on this machine, nothing measured (run it on a machine "
        "with an NVIDIA GPU)\n");
    return kExitNoCuda;
  }
  try {
    return Run(o);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "llama_throughput: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llama_throughput: %s\n", e.what());
  }
  return kExitFailed;
}
