#include "worker/model/linear_layer.h"

#include <torch/nn/modules/linear.h>

#include <stdexcept>

namespace diablo::model {

at::Tensor ApplyLinear(torch::nn::Module& parent, const std::string& name, const at::Tensor& x) {
  // named_children() is a small ordered map; looking it up per call costs
  // microseconds next to the projection itself.
  auto children = parent.named_children();
  auto* child = children.find(name);
  if (child == nullptr) {
    throw std::logic_error("module '" + parent.name() + "' has no projection '" + name + "'");
  }
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(child->get())) {
    return linear->forward(x);
  }
  if (auto* layer = dynamic_cast<LinearLayer*>(child->get())) return layer->forward(x);
  throw std::logic_error("projection '" + name + "' is a " + (*child)->name() +
                         ", which cannot be used as a linear layer");
}

}  // namespace diablo::model
