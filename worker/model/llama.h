// The Llama-family decoder-only transformer (Llama 2/3, Mistral, Qwen2,
// SmolLM) in LibTorch, with the Hugging Face module names
// (model.layers.3.self_attn.q_proj, ...) so that weights, adapters and merges
// line up with the ecosystem's files.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <optional>
#include <vector>

#include "formats/llama_config.h"
#include "worker/model/packed_embedding.h"

namespace diablo::model {

// Keys and values of past positions, one [batch, kv_heads, length, head_dim]
// pair per layer; empty until the first forward that is given the cache.
struct KVCache {
  std::vector<at::Tensor> keys, values;
  int64_t length() const { return keys.empty() ? 0 : keys[0].size(2); }
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t size, double eps);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// Inputs shared by all layers of one forward pass.
struct AttentionContext {
  at::Tensor cos, sin;             // [batch, seq, head_dim], rotary tables for these positions
  std::optional<at::Tensor> mask;  // [batch, 1, seq, past+seq] bool, true = may attend
  bool causal = false;             // use SDPA's causal mask instead of `mask`
};

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  explicit LlamaAttentionImpl(const LlamaConfig& config);
  // x: [batch, seq, hidden].  When `cache` is given, past keys/values are
  // read from it and this step's are appended.
  at::Tensor forward(const at::Tensor& x, const AttentionContext& context, KVCache* cache,
                     int64_t layer);

 private:
  int64_t heads_, kv_heads_, head_dim_;
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  explicit LlamaMLPImpl(const LlamaConfig& config);
  at::Tensor forward(const at::Tensor& x);
};
TORCH_MODULE(LlamaMLP);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  LlamaDecoderLayerImpl(const LlamaConfig& config);
  at::Tensor forward(const at::Tensor& x, const AttentionContext& context, KVCache* cache,
                     int64_t layer);

  LlamaAttention self_attn{nullptr};
  LlamaMLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const LlamaConfig& config);
  // Token ids [batch, seq] -> embeddings [batch, seq, hidden] from whichever
  // table the model holds.
  at::Tensor embed(const at::Tensor& input_ids);
  // Replaces the dense table with its GGUF blocks (base_weights: packed); the
  // packed table takes the name embed_tokens.
  void use_packed_embeddings(PackedEmbedding packed);

  torch::nn::Embedding embed_tokens{nullptr};    // null once packed
  PackedEmbedding packed_embed_tokens{nullptr};  // set when packed
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  explicit LlamaForCausalLMImpl(const LlamaConfig& config);

  // Final hidden states [batch, seq, hidden] for token ids [batch, seq].
  // attention_mask: optional [batch, past+seq], 1 for real tokens and 0 for
  // (left) padding; positions then count real tokens only.
  at::Tensor forward_hidden(const at::Tensor& input_ids, KVCache* cache = nullptr,
                            const std::optional<at::Tensor>& attention_mask = std::nullopt);
  // Logits [..., vocab] (fp32) for hidden states [..., hidden].  Training calls
  // it on the positions that have labels only.
  at::Tensor logits(const at::Tensor& hidden);
  // Convenience: logits for every position.
  at::Tensor forward(const at::Tensor& input_ids);

  const LlamaConfig& config() const { return config_; }
  // Where the model's tensors live (it moves as a whole).
  at::Device device() const { return inv_freq_.device(); }
  // Divides the rotary frequencies by per-frequency factors [head_dim/2]: how
  // GGUF files (rope_freqs.weight) carry Llama 3.1's rope scaling.
  void ScaleRotaryFrequencies(const at::Tensor& factors);
  // Training: recompute each layer in backward instead of keeping its
  // activations (worker/model/activation_checkpoint.h).
  void set_gradient_checkpointing(bool enabled) { gradient_checkpointing_ = enabled; }

  LlamaModel model{nullptr};
  // lm_head; with tied embeddings it shares embed_tokens' weight and is not
  // registered as a separate parameter.
  torch::nn::Linear lm_head{nullptr};

 private:
  LlamaConfig config_;
  at::Tensor inv_freq_;  // [head_dim/2] rotary frequencies (llama3 scaling applied)
  bool gradient_checkpointing_ = false;
};
TORCH_MODULE(LlamaForCausalLM);

// While one is alive on this thread, constructed models leave the weights of
// their projections and embeddings unallocated (shape-only placeholders that
// hold one element).  Loaders assign or replace every one of them, and
// without this a randomly initialised copy of the whole model would sit in
// memory next to the real weights while loading.
class DeferWeightAllocation {
 public:
  DeferWeightAllocation();
  ~DeferWeightAllocation();
  DeferWeightAllocation(const DeferWeightAllocation&) = delete;
  DeferWeightAllocation& operator=(const DeferWeightAllocation&) = delete;
};

// Rotary inverse frequencies for the config (HF's "default" and "llama3").
at::Tensor RotaryInverseFrequencies(const LlamaConfig& config);

}  // namespace diablo::model
