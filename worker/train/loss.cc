#include "worker/train/loss.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace diablo::train {

MicroBatch Collate(const Dataset& data, const std::vector<int64_t>& indices, int32_t pad,
                   at::Device device) {
  size_t length = 0;
  for (int64_t i : indices)
    length = std::max(length, data.examples[static_cast<size_t>(i)].ids.size());
  std::vector<int64_t> ids(indices.size() * length, pad), positions, targets;
  for (size_t row = 0; row < indices.size(); ++row) {
    const Example& e = data.examples[static_cast<size_t>(indices[row])];
    for (size_t t = 0; t < e.ids.size(); ++t) ids[row * length + t] = e.ids[t];
    for (size_t t = 1; t < e.ids.size(); ++t) {
      if (!e.target[t]) continue;
      positions.push_back(static_cast<int64_t>(row * length + t - 1));
      targets.push_back(e.ids[t]);
    }
  }
  auto to_tensor = [&](std::vector<int64_t>& v, at::IntArrayRef shape) {
    return at::from_blob(v.data(), shape, at::kLong).clone().to(device);
  };
  return {to_tensor(ids, {static_cast<int64_t>(indices.size()), static_cast<int64_t>(length)}),
          to_tensor(positions, {static_cast<int64_t>(positions.size())}),
          to_tensor(targets, {static_cast<int64_t>(targets.size())})};
}

at::Tensor LossSum(model::LlamaForCausalLMImpl& model, const MicroBatch& batch) {
  at::Tensor hidden = model.forward_hidden(batch.ids);
  at::Tensor selected = hidden.reshape({-1, hidden.size(-1)}).index_select(0, batch.positions);
  return at::cross_entropy_loss(model.logits(selected), batch.targets, {}, at::Reduction::Sum);
}

int64_t SumLabels(const Dataset& data, const std::vector<int64_t>& indices) {
  int64_t n = 0;
  for (int64_t i : indices) n += data.examples[static_cast<size_t>(i)].label_count();
  return n;
}

int64_t SumTokens(const Dataset& data, const std::vector<int64_t>& indices) {
  int64_t n = 0;
  for (int64_t i : indices)
    n += static_cast<int64_t>(data.examples[static_cast<size_t>(i)].ids.size());
  return n;
}

}  // namespace diablo::train
