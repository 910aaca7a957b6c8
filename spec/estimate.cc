// EstimateTraining: parameter counts by matching targets against the module
// tree of spec/model_shape.h, and a memory model of one training step.
//
// Memory, in bytes (documented for users in docs/cli.md, "diablo estimate"):
//   frozen weights  norms in fp32 (the runtime keeps them fp32), every other
//                   weight in the chosen precision, or the GGUF file's stored
//                   size; 0 for full fine-tuning, whose weights are trainable
//   trainable       4 * P  (P = trainable parameters; adapters train in fp32)
//   gradients       4 * P
//   optimizer       8 * P  (AdamW's two fp32 moments)
//   activations     what autograd keeps for backward on one micro-batch, with
//                   T = micro_batch * seq_len tokens, T_l label positions,
//                   a = 2 bytes for bf16/fp16 weights, else 4, and the model's
//                   h = hidden, q = heads * head_dim, kv = kv_heads * head_dim,
//                   m = intermediate, L = layers, V = vocabulary:
//     per layer  A = T * a * (4h + 2q + 2kv + 4m)
//                  attention: norm input and output (2h), q and the rotated
//                  k, v kept by attention (q + 2kv), attention output = o_proj
//                  input (q); attention itself is fused (flash / memory-
//                  efficient SDPA), so no seq x seq scores are kept.
//                  MLP: norm input and output (2h), gate and up outputs (2m),
//                  silu(gate) (m), the product = down_proj input (m).
//     layers     L * A without gradient checkpointing;
//                L * T * h * a + A with it (each layer keeps its input, and
//                one layer's activations are recomputed at a time in backward)
//     head       T * h * a (final norm input) + T_l * h * a (lm_head input,
//                label positions only) + T_l * V * 8 (fp32 logits and the
//                log-softmax the loss keeps, label positions only)
//   Not counted: the CUDA context and allocator slack (plan about 1 GiB),
//   LoRA's rank-r intermediates and dropout masks (small next to the above).
#include "spec/estimate.h"

#include <algorithm>
#include <stdexcept>

#include "spec/model_shape.h"
#include "spec/target_modules.h"

namespace diablo::estimate {
namespace {

[[noreturn]] void Fail(const std::string& message) { throw std::invalid_argument(message); }

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// DiaBlo's layout (DESIGN.md, "The method"): N_eff * b_in * b_out.  Written
// out again here rather than shared with kernels/ (which is LibTorch);
// tests/spec/estimate_inject_test.cc checks the two agree.
int64_t DiaBloParameters(int64_t in, int64_t out, int64_t blocks) {
  const int64_t block_in = CeilDiv(in, blocks), block_out = CeilDiv(out, blocks);
  const int64_t n_eff = std::max(CeilDiv(in, block_in), CeilDiv(out, block_out));
  return n_eff * block_in * block_out;
}

std::vector<TargetModule> CompileTargets(const std::vector<std::string>& specs) {
  for (const std::string& spec : specs)
    if (spec.empty() || spec == "re:") Fail("target_modules contains an empty name or pattern");
  return CompileTargetModules(specs);
}

const char* KindName(ModuleKind kind) {
  switch (kind) {
    case ModuleKind::kContainer:
      return "a container module";
    case ModuleKind::kLinear:
      return "a linear layer";
    case ModuleKind::kEmbedding:
      return "an embedding";
    case ModuleKind::kNorm:
      return "an RMSNorm";
  }
  return "a module";
}

// A hint for "matched nothing", as peft::InjectAdapters gives one.
std::string LinearNames(const std::vector<ModuleShape>& modules) {
  std::vector<std::string> names;
  for (const ModuleShape& m : modules) {
    if (m.kind != ModuleKind::kLinear) continue;
    bool seen = false;
    for (const auto& n : names) seen = seen || n == m.name();
    if (!seen) names.push_back(m.name());
  }
  std::string text;
  for (const auto& n : names) text += (text.empty() ? "" : ", ") + n;
  return "linear layers in this model: " + text;
}

// The modules the method trains, with the parameters each one adds.
std::vector<std::pair<const ModuleShape*, int64_t>> TrainedModules(
    const std::vector<ModuleShape>& modules, const EstimateOptions& options) {
  std::vector<std::pair<const ModuleShape*, int64_t>> trained;
  if (options.method == Method::kFull) {
    for (const ModuleShape& m : modules) {
      if (m.parameters() > 0) trained.emplace_back(&m, m.parameters());
    }
    return trained;
  }
  if (options.target_modules.empty()) {
    Fail("target_modules is empty; name at least one layer, e.g. \"q_proj\"");
  }
  std::vector<TargetModule> targets = CompileTargets(options.target_modules);
  for (const ModuleShape& m : modules) {
    bool matched = false;
    for (TargetModule& t : targets) {
      if (MatchesTarget(t, m.path)) {
        ++t.matches;
        matched = true;
      }
    }
    if (!matched) continue;
    if (m.kind != ModuleKind::kLinear) {
      Fail("module '" + m.path + "' matches the targets but is " + KindName(m.kind) +
           ", not a linear layer; narrow the target names or pattern");
    }
    const int64_t added = options.method == Method::kDiaBlo
                              ? DiaBloParameters(m.in, m.out, options.blocks)
                              : options.rank * (m.in + m.out);
    trained.emplace_back(&m, added);
  }
  for (const TargetModule& t : targets) {
    if (t.matches == 0) {
      Fail("target '" + t.spec + "' matches no module (" +
           (t.is_pattern ? "a \"re:\" pattern must match the whole dotted path, e.g. "
                           "model.layers.0.self_attn.q_proj"
                         : "a plain name must equal the last path component") +
           "); " + LinearNames(modules));
    }
  }
  return trained;
}

void Validate(const EstimateOptions& o) {
  if (o.method == Method::kDiaBlo && o.blocks < 1) {
    Fail("blocks must be a positive number of diagonal blocks, got " + std::to_string(o.blocks));
  }
  if (o.method == Method::kLoRA && o.rank < 1) {
    Fail("rank must be positive, got " + std::to_string(o.rank));
  }
  if (o.micro_batch < 1) Fail("micro_batch must be positive, got " + std::to_string(o.micro_batch));
  if (o.seq_len < 1) Fail("seq_len must be positive, got " + std::to_string(o.seq_len));
  if (o.label_tokens < 0 || o.label_tokens > o.micro_batch * o.seq_len) {
    Fail("label_tokens must be between 0 (all positions) and micro_batch * seq_len = " +
         std::to_string(o.micro_batch * o.seq_len) + ", got " + std::to_string(o.label_tokens));
  }
  if (o.base_weights == BaseWeights::kPacked && o.stored_weight_bytes == 0) {
    Fail("packed base weights (as the file stores them) need a GGUF model");
  }
}

uint64_t FrozenWeightBytes(const std::vector<ModuleShape>& modules, const EstimateOptions& o) {
  if (o.method == Method::kFull) return 0;
  if (o.base_weights == BaseWeights::kPacked) return o.stored_weight_bytes;
  const uint64_t element = o.precision == Precision::kFp32 ? 4 : 2;
  uint64_t bytes = 0;
  for (const ModuleShape& m : modules) {
    bytes += static_cast<uint64_t>(m.parameters()) * (m.kind == ModuleKind::kNorm ? 4 : element);
  }
  return bytes;
}

uint64_t ActivationBytes(const model::LlamaConfig& c, const EstimateOptions& o) {
  const uint64_t a = o.precision == Precision::kFp32 ? 4 : 2;
  const uint64_t tokens = static_cast<uint64_t>(o.micro_batch * o.seq_len);
  const uint64_t labels = o.label_tokens > 0 ? static_cast<uint64_t>(o.label_tokens) : tokens;
  const uint64_t h = c.hidden_size, m = c.intermediate_size, layers = c.num_hidden_layers;
  const uint64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  const uint64_t per_layer = tokens * a * (4 * h + 2 * q + 2 * kv + 4 * m);
  const uint64_t body =
      o.gradient_checkpointing ? layers * tokens * h * a + per_layer : layers * per_layer;
  const uint64_t head = tokens * h * a + labels * h * a + labels * c.vocab_size * 8;
  return body + head;
}

}  // namespace

Estimate EstimateTraining(const model::LlamaConfig& config, const EstimateOptions& options) {
  Validate(options);
  const std::vector<ModuleShape> modules = LlamaModules(config);
  Estimate e;
  for (const ModuleShape& m : modules) e.total_parameters += m.parameters();
  for (const auto& [module, added] : TrainedModules(modules, options)) {
    e.trainable_parameters += added;
    const std::string name = module->name();
    auto it = e.targets.begin();
    while (it != e.targets.end() && it->module != name) ++it;
    if (it == e.targets.end()) it = e.targets.insert(it, TargetCount{name, 0, 0});
    ++it->layers;
    it->parameters += added;
  }
  e.trainable_percent =
      100.0 * static_cast<double>(e.trainable_parameters) / static_cast<double>(e.total_parameters);

  MemoryEstimate& mem = e.memory;
  const uint64_t trainable = static_cast<uint64_t>(e.trainable_parameters);
  mem.frozen_weights = FrozenWeightBytes(modules, options);
  mem.trainable = 4 * trainable;
  mem.gradients = 4 * trainable;
  mem.optimizer = 8 * trainable;
  mem.activations = ActivationBytes(config, options);
  mem.total = mem.frozen_weights + mem.trainable + mem.gradients + mem.optimizer + mem.activations;
  return e;
}

}  // namespace diablo::estimate
