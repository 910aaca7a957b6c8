#include "worker/model/load_gguf.h"

#include <ATen/ATen.h>

#include <cstring>
#include <regex>

#include "formats/ggml_dequant.h"

namespace diablo::model {

std::string HfNameForGguf(const std::string& name) {
  static const std::map<std::string, std::string> kGlobal = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
  };
  static const std::map<std::string, std::string> kLayer = {
      {"attn_norm", "input_layernorm"}, {"ffn_norm", "post_attention_layernorm"},
      {"attn_q", "self_attn.q_proj"},   {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},   {"attn_output", "self_attn.o_proj"},
      {"ffn_gate", "mlp.gate_proj"},    {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},
  };
  if (auto it = kGlobal.find(name); it != kGlobal.end()) return it->second;
  if (name == "rope_freqs.weight") return "";
  static const std::regex kBlock(R"(blk\.(\d+)\.([a-z_]+)\.(weight|bias))");
  std::smatch m;
  if (std::regex_match(name, m, kBlock)) {
    if (auto it = kLayer.find(m[2].str()); it != kLayer.end()) {
      return "model.layers." + m[1].str() + "." + it->second + "." + m[3].str();
    }
  }
  throw FormatError("GGUF tensor '" + name +
                    "' is not part of a Llama-family model this version can load");
}

at::Tensor UnpermuteRotaryRows(const at::Tensor& weight, int64_t heads) {
  const int64_t rows = weight.size(0);
  const int64_t head_dim = rows / heads;
  std::vector<int64_t> shape = {heads, head_dim / 2, 2};
  for (int64_t d = 1; d < weight.dim(); ++d) shape.push_back(weight.size(d));
  return weight.reshape(shape).transpose(1, 2).reshape(weight.sizes()).contiguous();
}

namespace {

at::Tensor DequantizeTensor(const GgufFile& file, const GgufTensorInfo& info) {
  std::vector<int64_t> shape(info.dims.rbegin(), info.dims.rend());
  at::Tensor t = at::empty(shape, at::kFloat);
  DequantizeToFloat(info.type, file.tensor_data(info), info.elements(),
                    {t.data_ptr<float>(), static_cast<size_t>(t.numel())});
  return t;
}

}  // namespace

std::optional<at::Tensor> ReadGgufRopeFactors(const GgufFile& file) {
  const GgufTensorInfo* info = file.FindTensor("rope_freqs.weight");
  if (info == nullptr) return std::nullopt;
  return DequantizeTensor(file, *info);
}

namespace {

// Undoes llama.cpp's query/key row permutation on a tensor of any dtype.
at::Tensor HfRowOrder(const GgufFile& file, const LlamaConfig& config, const std::string& name,
                      at::Tensor t) {
  if (file.GetString("general.architecture") != "llama") return t;
  if (name.find(".attn_q.") != std::string::npos) {
    return UnpermuteRotaryRows(t, config.num_attention_heads);
  }
  if (name.find(".attn_k.") != std::string::npos) {
    return UnpermuteRotaryRows(t, config.num_key_value_heads);
  }
  return t;
}

bool IsProjection(const std::string& hf_name) {
  return hf_name.rfind("model.layers.", 0) == 0 &&
         (hf_name.find(".self_attn.") != std::string::npos ||
          hf_name.find(".mlp.") != std::string::npos) &&
         hf_name.ends_with(".weight");
}

}  // namespace

std::map<std::string, at::Tensor> ReadGgufWeights(const GgufFile& file, const LlamaConfig& config,
                                                  const std::set<std::string>& skip) {
  std::map<std::string, at::Tensor> weights;
  for (const GgufTensorInfo& info : file.tensors()) {
    std::string hf_name = HfNameForGguf(info.name);
    if (hf_name.empty() || skip.count(hf_name)) continue;
    weights.emplace(std::move(hf_name),
                    HfRowOrder(file, config, info.name, DequantizeTensor(file, info)));
  }
  return weights;
}

std::map<std::string, PackedBlocks> ReadGgufPackedWeights(const GgufFile& file,
                                                          const LlamaConfig& config) {
  std::map<std::string, PackedBlocks> packed;
  for (const GgufTensorInfo& info : file.tensors()) {
    const std::string hf_name = HfNameForGguf(info.name);
    // A tied model's output.weight is a copy the model never uses.
    const bool head = hf_name == "lm_head.weight" && !config.tie_word_embeddings;
    const bool packable = IsProjection(hf_name) || hf_name == "model.embed_tokens.weight" || head;
    if (!packable || !CanKeepPacked(info.type) || info.dims.size() != 2) continue;
    const int64_t in = static_cast<int64_t>(info.dims[0]), out = static_cast<int64_t>(info.dims[1]);
    const std::span<const uint8_t> bytes = file.tensor_data(info);
    // A copy, not a view: the file mapping is released once loading ends.
    at::Tensor data = at::empty({out, static_cast<int64_t>(bytes.size()) / out}, at::kByte);
    std::memcpy(data.data_ptr<uint8_t>(), bytes.data(), bytes.size());
    data = HfRowOrder(file, config, info.name, data);
    packed.emplace(hf_name.substr(0, hf_name.size() - std::string(".weight").size()),
                   PackedBlocks{data, info.type, in, out});
  }
  return packed;
}

}  // namespace diablo::model
