// A tiny module tree with Hugging Face Llama module names
// (model.layers.<i>.self_attn.{q,k,v,o}_proj, model.layers.<i>.mlp.
// {gate,up,down}_proj), random weights from a seed, for adapter-file tests.
// It has no forward: tests run the injected adapter layers one by one.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "worker/peft/adapter_layer.h"
#include "worker/peft/inject.h"

namespace diablo::testing {

struct TinySizes {
  int64_t hidden = 16, kv = 8, mlp = 24;
  int layers = 2;
  bool bias = false;  // on q/k/v, as Qwen2 has
};

inline std::shared_ptr<torch::nn::Module> MakeTinyModel(const TinySizes& s, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  auto linear = [&](int64_t in, int64_t out, bool bias) {
    torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(bias));
    at::NoGradGuard no_grad;
    l->weight.copy_(at::randn({out, in}, gen) * 0.3);
    if (bias) l->bias.copy_(at::randn({out}, gen) * 0.1);
    return l;
  };
  auto root = std::make_shared<torch::nn::Module>("TinyCausalLM");
  auto inner = std::make_shared<torch::nn::Module>("TinyModel");
  torch::nn::ModuleList layers;
  for (int i = 0; i < s.layers; ++i) {
    auto layer = std::make_shared<torch::nn::Module>("TinyDecoderLayer");
    auto attn = std::make_shared<torch::nn::Module>("TinyAttention");
    attn->register_module("q_proj", linear(s.hidden, s.hidden, s.bias));
    attn->register_module("k_proj", linear(s.hidden, s.kv, s.bias));
    attn->register_module("v_proj", linear(s.hidden, s.kv, s.bias));
    attn->register_module("o_proj", linear(s.hidden, s.hidden, false));
    auto mlp = std::make_shared<torch::nn::Module>("TinyMLP");
    mlp->register_module("gate_proj", linear(s.hidden, s.mlp, false));
    mlp->register_module("up_proj", linear(s.hidden, s.mlp, false));
    mlp->register_module("down_proj", linear(s.mlp, s.hidden, false));
    layer->register_module("self_attn", attn);
    layer->register_module("mlp", mlp);
    layers->push_back(layer);
  }
  inner->register_module("layers", layers);
  root->register_module("model", inner);
  return root;
}

// Gives every trainable adapter tensor random non-zero values.
inline void RandomizeAdapters(torch::nn::Module& model, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::NoGradGuard no_grad;
  for (const auto& a : peft::FindAdapters(model)) {
    for (const at::Tensor& t : a.layer->trainable_parameters()) {
      at::Tensor p = t;
      p.copy_(at::randn(t.sizes(), gen) * 0.2);
    }
  }
}

// Each adapter layer's output on a fixed random input of its width.
inline std::map<std::string, at::Tensor> AdapterOutputs(torch::nn::Module& model, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  std::map<std::string, at::Tensor> out;
  at::NoGradGuard no_grad;
  for (const auto& a : peft::FindAdapters(model)) {
    at::Tensor weight = a.module->named_parameters(/*recurse=*/false)["weight"];
    at::Tensor x = at::randn({3, weight.size(1)}, gen);
    out[a.path] = a.layer->forward(x);
  }
  return out;
}

}  // namespace diablo::testing
