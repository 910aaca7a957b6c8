// Forward pass of the Llama family, written to match Hugging Face
// transformers' numerics: RMSNorm in fp32, rotary tables in fp32, the
// rotate-half convention, grouped-query attention through
// scaled_dot_product_attention, SwiGLU MLP.
#include "worker/model/llama.h"

#include <ATen/ATen.h>

#include <cmath>
#include <numbers>

#include "worker/model/activation_checkpoint.h"
#include "worker/model/linear_layer.h"

namespace diablo::model {
namespace {

thread_local int deferred_allocation = 0;

// Frees a freshly initialised tensor right away, keeping its shape, so the
// model's peak is one matrix rather than all of them (DeferWeightAllocation).
void MaybeDefer(at::Tensor& t) {
  if (deferred_allocation > 0 && t.defined()) {
    t.set_data(at::empty({}, t.options()).expand(t.sizes()));
  }
}

torch::nn::Linear MakeLinear(int64_t in, int64_t out, bool bias) {
  torch::nn::Linear linear(torch::nn::LinearOptions(in, out).bias(bias));
  MaybeDefer(linear->weight);
  MaybeDefer(linear->bias);
  return linear;
}

at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
}

// x: [batch, heads, seq, head_dim]; cos/sin: [batch, seq, head_dim].
at::Tensor ApplyRotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);
  return x * c + RotateHalf(x) * s;
}

}  // namespace

DeferWeightAllocation::DeferWeightAllocation() { ++deferred_allocation; }
DeferWeightAllocation::~DeferWeightAllocation() { --deferred_allocation; }

at::Tensor RotaryInverseFrequencies(const LlamaConfig& config) {
  const int64_t half = config.head_dim / 2;
  at::Tensor exponent = at::arange(0, config.head_dim, 2, at::kLong).to(at::kFloat) /
                        static_cast<double>(config.head_dim);
  at::Tensor inv_freq = 1.0 / at::pow(config.rope_theta, exponent);
  if (config.rope_scaling.type == "llama3") {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and
    // the band between them interpolated smoothly.
    const RopeScaling& rs = config.rope_scaling;
    const double old_context = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_context / rs.low_freq_factor;
    const double high_wavelen = old_context / rs.high_freq_factor;
    auto f = inv_freq.accessor<float, 1>();
    for (int64_t i = 0; i < half; ++i) {
      const double freq = f[i];
      const double wavelen = 2 * std::numbers::pi / freq;
      double scaled = freq;
      if (wavelen > low_wavelen) {
        scaled = freq / rs.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_context / wavelen - rs.low_freq_factor) /
                              (rs.high_freq_factor - rs.low_freq_factor);
        scaled = (1 - smooth) * freq / rs.factor + smooth * freq;
      }
      f[i] = static_cast<float>(scaled);
    }
  }
  return inv_freq;
}

RMSNormImpl::RMSNormImpl(int64_t size, double eps) : eps_(eps) {
  weight = register_parameter("weight", at::ones({size}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  at::Tensor h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  // The norm's weight stays fp32 (load_model.cc); the product is rounded
  // once to the activations' dtype, so bf16/fp16 layers get their own dtype.
  return (weight * h).to(x.scalar_type());
}

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& c)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim) {
  register_module("q_proj", MakeLinear(c.hidden_size, heads_ * head_dim_, c.qkv_bias));
  register_module("k_proj", MakeLinear(c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias));
  register_module("v_proj", MakeLinear(c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias));
  register_module("o_proj", MakeLinear(heads_ * head_dim_, c.hidden_size, c.o_bias));
}

at::Tensor LlamaAttentionImpl::forward(const at::Tensor& x, const AttentionContext& context,
                                       KVCache* cache, int64_t layer) {
  const int64_t batch = x.size(0), seq = x.size(1);
  at::Tensor q =
      ApplyLinear(*this, "q_proj", x).view({batch, seq, heads_, head_dim_}).transpose(1, 2);
  at::Tensor k =
      ApplyLinear(*this, "k_proj", x).view({batch, seq, kv_heads_, head_dim_}).transpose(1, 2);
  at::Tensor v =
      ApplyLinear(*this, "v_proj", x).view({batch, seq, kv_heads_, head_dim_}).transpose(1, 2);
  at::Tensor cos = context.cos.to(q.scalar_type()), sin = context.sin.to(q.scalar_type());
  q = ApplyRotary(q, cos, sin);
  k = ApplyRotary(k, cos, sin);
  if (cache != nullptr) {
    if (static_cast<int64_t>(cache->keys.size()) <= layer) {
      cache->keys.resize(layer + 1);
      cache->values.resize(layer + 1);
    }
    if (cache->keys[layer].defined()) {
      k = at::cat({cache->keys[layer], k}, 2);
      v = at::cat({cache->values[layer], v}, 2);
    }
    cache->keys[layer] = k;
    cache->values[layer] = v;
  }
  at::Tensor out = at::scaled_dot_product_attention(
      q, k, v, context.mask, /*dropout_p=*/0.0, /*is_causal=*/context.causal,
      /*scale=*/std::nullopt, /*enable_gqa=*/kv_heads_ != heads_);
  out = out.transpose(1, 2).reshape({batch, seq, heads_ * head_dim_});
  return ApplyLinear(*this, "o_proj", out);
}

LlamaMLPImpl::LlamaMLPImpl(const LlamaConfig& c) {
  register_module("gate_proj", MakeLinear(c.hidden_size, c.intermediate_size, c.mlp_bias));
  register_module("up_proj", MakeLinear(c.hidden_size, c.intermediate_size, c.mlp_bias));
  register_module("down_proj", MakeLinear(c.intermediate_size, c.hidden_size, c.mlp_bias));
}

at::Tensor LlamaMLPImpl::forward(const at::Tensor& x) {
  at::Tensor gate = at::silu(ApplyLinear(*this, "gate_proj", x));
  return ApplyLinear(*this, "down_proj", gate * ApplyLinear(*this, "up_proj", x));
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& c) {
  self_attn = register_module("self_attn", LlamaAttention(c));
  mlp = register_module("mlp", LlamaMLP(c));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

at::Tensor LlamaDecoderLayerImpl::forward(const at::Tensor& x, const AttentionContext& context,
                                          KVCache* cache, int64_t layer) {
  at::Tensor h = x + self_attn->forward(input_layernorm->forward(x), context, cache, layer);
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& c) {
  torch::nn::EmbeddingOptions options(c.vocab_size, c.hidden_size);
  // Deferred: a one-element placeholder of the table's shape instead of a
  // randomly initialised vocab x hidden table (113 MB for SmolLM2) that the
  // loader would replace at once.
  if (deferred_allocation > 0) options._weight(at::empty({}).expand({c.vocab_size, c.hidden_size}));
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(options));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(LlamaDecoderLayer(c));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

at::Tensor LlamaModelImpl::embed(const at::Tensor& input_ids) {
  return packed_embed_tokens ? packed_embed_tokens->forward(input_ids)
                             : embed_tokens->forward(input_ids);
}

void LlamaModelImpl::use_packed_embeddings(PackedEmbedding packed) {
  TORCH_CHECK(packed->num_embeddings() == embed_tokens->weight.size(0) &&
                  packed->embedding_dim() == embed_tokens->weight.size(1),
              "packed embeddings [", packed->num_embeddings(), ", ", packed->embedding_dim(),
              "] do not match the model's table ", embed_tokens->weight.sizes());
  packed_embed_tokens = packed;
  replace_module("embed_tokens", packed_embed_tokens.ptr());
  embed_tokens = nullptr;
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& config) : config_(config) {
  config_.Validate("model config");
  model = register_module("model", LlamaModel(config_));
  if (!config_.tie_word_embeddings) {
    lm_head =
        register_module("lm_head", MakeLinear(config_.hidden_size, config_.vocab_size, false));
  }
  inv_freq_ = register_buffer("inv_freq", RotaryInverseFrequencies(config_));
}

void LlamaForCausalLMImpl::ScaleRotaryFrequencies(const at::Tensor& factors) {
  TORCH_CHECK(factors.numel() == inv_freq_.numel(), "rotary frequency factors: expected ",
              inv_freq_.numel(), " values, got ", factors.numel());
  inv_freq_.div_(factors.to(inv_freq_.scalar_type()).view_as(inv_freq_));
}

at::Tensor LlamaForCausalLMImpl::forward_hidden(const at::Tensor& input_ids, KVCache* cache,
                                                const std::optional<at::Tensor>& attention_mask) {
  const int64_t batch = input_ids.size(0), seq = input_ids.size(1);
  const int64_t past = cache != nullptr ? cache->length() : 0;
  const at::Device device = input_ids.device();

  AttentionContext context;
  at::Tensor positions;
  if (attention_mask.has_value()) {
    // Left padding: a token's position counts the real tokens before it, and
    // no query attends to a padding key (a padding query attends to itself
    // only, which keeps its row finite; its output is never used).
    at::Tensor valid = attention_mask->to(device).to(at::kBool);  // [batch, past+seq]
    TORCH_CHECK(valid.size(1) == past + seq, "attention_mask covers ", valid.size(1),
                " positions, expected ", past + seq);
    positions = (valid.to(at::kLong).cumsum(1) - 1).clamp_min(0).slice(1, past);
    at::Tensor q_index = at::arange(past, past + seq, at::TensorOptions(device).dtype(at::kLong));
    at::Tensor k_index = at::arange(past + seq, at::TensorOptions(device).dtype(at::kLong));
    at::Tensor causal = k_index.unsqueeze(0) <= q_index.unsqueeze(1);  // [seq, past+seq]
    at::Tensor self = k_index.unsqueeze(0) == q_index.unsqueeze(1);
    context.mask = ((causal.unsqueeze(0) & valid.unsqueeze(1)) | self.unsqueeze(0)).unsqueeze(1);
  } else {
    positions = at::arange(past, past + seq, at::TensorOptions(device).dtype(at::kLong))
                    .unsqueeze(0)
                    .expand({batch, seq});
    if (seq > 1 && past == 0) {
      context.causal = true;
    } else if (seq > 1) {
      at::Tensor q_index = at::arange(past, past + seq, at::TensorOptions(device).dtype(at::kLong));
      at::Tensor k_index = at::arange(past + seq, at::TensorOptions(device).dtype(at::kLong));
      context.mask = (k_index.unsqueeze(0) <= q_index.unsqueeze(1)).view({1, 1, seq, past + seq});
    }
  }
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq_.to(device).view({1, 1, -1});
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  context.cos = emb.cos();
  context.sin = emb.sin();

  at::Tensor h = model->embed(input_ids);
  for (size_t i = 0; i < model->layers->size(); ++i) {
    auto* layer = model->layers->ptr<LlamaDecoderLayerImpl>(i).get();
    if (gradient_checkpointing_ && cache == nullptr && at::GradMode::is_enabled())
      h = CheckpointedLayerForward(*layer, h, context, static_cast<int64_t>(i));
    else
      h = layer->forward(h, context, cache, static_cast<int64_t>(i));
  }
  return model->norm->forward(h);
}

at::Tensor LlamaForCausalLMImpl::logits(const at::Tensor& hidden) {
  if (lm_head) return ApplyLinear(*this, "lm_head", hidden).to(at::kFloat);
  if (model->packed_embed_tokens) return model->packed_embed_tokens->project(hidden).to(at::kFloat);
  return at::linear(hidden, model->embed_tokens->weight).to(at::kFloat);
}

at::Tensor LlamaForCausalLMImpl::forward(const at::Tensor& input_ids) {
  return logits(forward_hidden(input_ids));
}

}  // namespace diablo::model
