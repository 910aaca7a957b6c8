// GGUF → Hugging Face names and layout: tensor renaming, dequantisation, and
// undoing the row permutation that llama.cpp's converter applies to the query
// and key projections of Llama-architecture models.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <set>
#include <string>

#include "formats/gguf.h"
#include "formats/llama_config.h"
#include "worker/model/packed_linear.h"

namespace diablo::model {

// The HF parameter name for a GGUF tensor name ("blk.3.attn_q.weight" ->
// "model.layers.3.self_attn.q_proj.weight"); empty if the tensor has no HF
// counterpart (e.g. rope_freqs).  Throws FormatError for unknown names.
std::string HfNameForGguf(const std::string& gguf_name);

// All weights of the file as fp32 tensors with HF names and shapes, except
// the HF names in `skip` (weights the caller keeps packed).
std::map<std::string, at::Tensor> ReadGgufWeights(const GgufFile& file, const LlamaConfig& config,
                                                  const std::set<std::string>& skip = {});

// The weights stored as Q4_0, Q4_1 or Q8_0 that can stay packed: the
// projections (attention and MLP), the token embedding table, and an untied
// lm_head.  Copied out of the file in their blocks and keyed by the HF module
// path ("model.layers.3.self_attn.q_proj", "model.embed_tokens", "lm_head").
// Rows come in HF order: the query/key permutation moves whole rows, and a
// row's blocks never span two rows, so it applies to the bytes as it does to
// the values.
std::map<std::string, PackedBlocks> ReadGgufPackedWeights(const GgufFile& file,
                                                          const LlamaConfig& config);

// Llama 3.1's rope scaling as GGUF stores it: per-frequency divisors
// (rope_freqs.weight, [head_dim/2]), or nullopt when the file has none.
std::optional<at::Tensor> ReadGgufRopeFactors(const GgufFile& file);

// Inverse of the converter's permutation of attn_q / attn_k rows: within each
// head, llama.cpp stores the two rotary halves interleaved; HF keeps them as
// two contiguous halves.  `weight` is [heads * head_dim, ...].
at::Tensor UnpermuteRotaryRows(const at::Tensor& weight, int64_t heads);

}  // namespace diablo::model
