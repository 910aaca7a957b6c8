// LlamaModules: the module tree of worker/model/llama.cc written out from the
// config.  The order and names must follow that file's register_module calls,
// which tests/spec/estimate_inject_test.cc checks against the real model.
#include "spec/model_shape.h"

namespace diablo::estimate {

int64_t ModuleShape::parameters() const {
  switch (kind) {
    case ModuleKind::kContainer:
      return 0;
    case ModuleKind::kLinear:
      return in * out + (bias ? out : 0);
    case ModuleKind::kEmbedding:
      return in * out;
    case ModuleKind::kNorm:
      return out;
  }
  return 0;
}

std::string ModuleShape::name() const {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

std::vector<ModuleShape> LlamaModules(const model::LlamaConfig& c) {
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
  std::vector<ModuleShape> modules;
  auto container = [&](std::string path) {
    modules.push_back({std::move(path), ModuleKind::kContainer, 0, 0, false});
  };
  auto linear = [&](std::string path, int64_t in, int64_t out, bool bias) {
    modules.push_back({std::move(path), ModuleKind::kLinear, in, out, bias});
  };
  auto norm = [&](std::string path) {
    modules.push_back({std::move(path), ModuleKind::kNorm, 0, c.hidden_size, false});
  };

  container("model");
  modules.push_back(
      {"model.embed_tokens", ModuleKind::kEmbedding, c.hidden_size, c.vocab_size, false});
  container("model.layers");
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string layer = "model.layers." + std::to_string(i);
    container(layer);
    container(layer + ".self_attn");
    linear(layer + ".self_attn.q_proj", c.hidden_size, q_dim, c.qkv_bias);
    linear(layer + ".self_attn.k_proj", c.hidden_size, kv_dim, c.qkv_bias);
    linear(layer + ".self_attn.v_proj", c.hidden_size, kv_dim, c.qkv_bias);
    linear(layer + ".self_attn.o_proj", q_dim, c.hidden_size, c.o_bias);
    container(layer + ".mlp");
    linear(layer + ".mlp.gate_proj", c.hidden_size, c.intermediate_size, c.mlp_bias);
    linear(layer + ".mlp.up_proj", c.hidden_size, c.intermediate_size, c.mlp_bias);
    linear(layer + ".mlp.down_proj", c.intermediate_size, c.hidden_size, c.mlp_bias);
    norm(layer + ".input_layernorm");
    norm(layer + ".post_attention_layernorm");
  }
  norm("model.norm");
  if (!c.tie_word_embeddings) linear("lm_head", c.hidden_size, c.vocab_size, false);
  return modules;
}

}  // namespace diablo::estimate
