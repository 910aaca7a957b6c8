// A tiny random Llama written to disk as a Hugging Face directory
// (config.json, model.safetensors, tokenizer.json with byte tokens and the
// ChatML markers, tokenizer_config.json with a ChatML template), so the
// training tests run the real loaders, tokenizer and chat template in
// seconds.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "worker/model/llama.h"
#include "worker/peft/tensor_io.h"

namespace diablo::testing {

// The GPT-2 byte-to-unicode map that byte-level BPE vocabularies use.
inline std::string ByteLevelChar(uint8_t b) {
  uint32_t cp = b;
  if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174))) {
    int n = 0;
    for (uint32_t c = 0; c < b; ++c)
      if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174))) ++n;
    cp = 256 + static_cast<uint32_t>(n);
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

struct TinyLlmOptions {
  int64_t hidden = 32, intermediate = 48, layers = 2, heads = 4, kv_heads = 2;
  uint64_t seed = 1;
};

inline void WriteTinyLlm(const std::filesystem::path& dir, const TinyLlmOptions& o = {}) {
  using nlohmann::json;
  std::filesystem::create_directories(dir);
  const int64_t vocab = 258;  // 256 bytes + <|im_start|> + <|im_end|>
  json config{{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"vocab_size", vocab},
              {"hidden_size", o.hidden},
              {"intermediate_size", o.intermediate},
              {"num_hidden_layers", o.layers},
              {"num_attention_heads", o.heads},
              {"num_key_value_heads", o.kv_heads},
              {"max_position_embeddings", 512},
              {"rms_norm_eps", 1e-5},
              {"rope_theta", 10000.0},
              {"tie_word_embeddings", false},
              {"bos_token_id", nullptr},
              {"eos_token_id", 257},
              {"torch_dtype", "float32"}};
  std::ofstream(dir / "config.json") << config.dump(2);

  model::LlamaConfig c;
  c.vocab_size = vocab;
  c.hidden_size = o.hidden;
  c.intermediate_size = o.intermediate;
  c.num_hidden_layers = o.layers;
  c.num_attention_heads = o.heads;
  c.num_key_value_heads = o.kv_heads;
  c.head_dim = o.hidden / o.heads;
  c.rms_norm_eps = 1e-5;
  model::LlamaForCausalLM m(c);
  at::Generator gen = at::detail::createCPUGenerator(o.seed);
  std::map<std::string, at::Tensor> weights;
  for (const auto& p : m->named_parameters()) {
    at::Tensor w = at::randn(p.value().sizes(), gen) * 0.2;
    if (p.key().find("norm") != std::string::npos) w = w * 0.1 + 1.0;
    weights[p.key()] = w;
  }
  peft::SaveSafetensors((dir / "model.safetensors").string(), weights, {{"format", "pt"}});

  json vocab_json = json::object();
  for (int b = 0; b < 256; ++b) vocab_json[ByteLevelChar(static_cast<uint8_t>(b))] = b;
  vocab_json["<|im_start|>"] = 256;
  vocab_json["<|im_end|>"] = 257;
  auto added = [](int id, const char* text) {
    return json{{"id", id},        {"content", text},     {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", true}};
  };
  json tokenizer{
      {"version", "1.0"},
      {"added_tokens", {added(256, "<|im_start|>"), added(257, "<|im_end|>")}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab_json}, {"merges", json::array()}}}};
  std::ofstream(dir / "tokenizer.json") << tokenizer.dump();
  json tokenizer_config{{"eos_token", "<|im_end|>"},
                        {"chat_template",
                         "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' "
                         "+ message['content'] + "
                         "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
                         "'<|im_start|>assistant\\n' }}{% endif %}"}};
  std::ofstream(dir / "tokenizer_config.json") << tokenizer_config.dump(2);
}

}  // namespace diablo::testing
