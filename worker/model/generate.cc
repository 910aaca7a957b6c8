// The generation loop: one prefill over the (left-padded) prompts, then one
// token per step through the KV cache.
#include "worker/model/generate.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <stdexcept>

namespace diablo::model {
namespace {

// Picks one token per row of logits [batch, vocab] (fp32).
at::Tensor SampleNext(const at::Tensor& logits, const GenerationOptions& o, at::Generator& gen) {
  if (o.temperature <= 0.0) return logits.argmax(-1);
  at::Tensor scores = logits / o.temperature;
  if (o.top_k > 0 && o.top_k < scores.size(-1)) {
    at::Tensor kth = std::get<0>(scores.topk(o.top_k, -1)).select(-1, o.top_k - 1).unsqueeze(-1);
    scores = scores.masked_fill(scores < kth, -INFINITY);
  }
  if (o.top_p < 1.0) {
    // Keep the smallest set of most likely tokens whose mass reaches top_p
    // (always at least the most likely one).
    auto [sorted, order] = scores.sort(-1, /*descending=*/true);
    at::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
    at::Tensor drop_sorted = (cumulative - sorted.softmax(-1)) >= o.top_p;
    at::Tensor drop = at::zeros_like(drop_sorted).scatter(-1, order, drop_sorted);
    scores = scores.masked_fill(drop, -INFINITY);
  }
  return at::multinomial(scores.softmax(-1), 1, /*replacement=*/false, gen).squeeze(-1);
}

bool EndsWithStopString(const std::vector<int64_t>& tokens, const GenerationOptions& o) {
  if (o.stop_strings.empty() || !o.decode) return false;
  const std::string text = o.decode(tokens);
  for (const std::string& stop : o.stop_strings) {
    if (!stop.empty() && text.find(stop) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

std::vector<Generation> Generate(LlamaForCausalLMImpl& model,
                                 const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerationOptions& o) {
  if (prompts.empty()) throw std::invalid_argument("generate: no prompts");
  if (o.max_new_tokens < 0) throw std::invalid_argument("max_new_tokens must be >= 0");
  if (o.top_p <= 0.0 || o.top_p > 1.0) throw std::invalid_argument("top_p must be in (0, 1]");
  size_t longest = 0;
  for (const auto& p : prompts) {
    if (p.empty()) throw std::invalid_argument("generate: a prompt has no tokens");
    longest = std::max(longest, p.size());
  }
  at::NoGradGuard no_grad;
  const int64_t batch = static_cast<int64_t>(prompts.size());
  const at::Device device = model.device();

  // Left-pad so every prompt ends at the same column; padding uses token 0,
  // masked out of attention.
  at::Tensor ids = at::zeros({batch, static_cast<int64_t>(longest)}, at::kLong);
  at::Tensor mask = at::zeros({batch, static_cast<int64_t>(longest)}, at::kLong);
  for (int64_t b = 0; b < batch; ++b) {
    const auto& p = prompts[b];
    const int64_t pad = static_cast<int64_t>(longest - p.size());
    for (size_t i = 0; i < p.size(); ++i) ids[b][pad + i] = p[i];
    mask[b].slice(0, pad).fill_(1);
  }
  const bool padded = mask.min().item<int64_t>() == 0;
  ids = ids.to(device);
  mask = mask.to(device);

  at::Generator gen = at::detail::getDefaultCPUGenerator().clone();
  gen.set_current_seed(o.seed);

  std::vector<Generation> out(batch);
  std::vector<bool> done(batch, false);
  KVCache cache;
  at::Tensor step_ids = ids;
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    std::optional<at::Tensor> attention;
    if (padded) attention = mask;
    at::Tensor hidden = model.forward_hidden(step_ids, &cache, attention);
    at::Tensor logits = model.logits(hidden.select(1, hidden.size(1) - 1)).to(at::kCPU);
    at::Tensor next = SampleNext(logits, o, gen);
    bool all_done = true;
    for (int64_t b = 0; b < batch; ++b) {
      if (done[b]) continue;
      const int64_t token = next[b].item<int64_t>();
      out[b].tokens.push_back(token);
      if (std::find(o.stop_ids.begin(), o.stop_ids.end(), token) != o.stop_ids.end()) {
        done[b] = true;
        out[b].stop_reason = "eos";
      } else if (EndsWithStopString(out[b].tokens, o)) {
        done[b] = true;
        out[b].stop_reason = "stop_string";
      }
      all_done = all_done && done[b];
    }
    if (all_done) break;
    step_ids = next.view({batch, 1}).to(device);
    mask = at::cat({mask, at::ones({batch, 1}, mask.options())}, 1);
  }
  for (auto& g : out) {
    if (g.stop_reason.empty()) g.stop_reason = "length";
  }
  return out;
}

std::vector<int64_t> EndOfTurnIds(const Tokenizer& tokenizer) {
  std::vector<int64_t> ids;
  if (auto eos = tokenizer.eos_id()) ids.push_back(*eos);
  for (const char* marker : {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>"}) {
    if (auto id = tokenizer.TokenToId(marker)) ids.push_back(*id);
  }
  return ids;
}

}  // namespace diablo::model
