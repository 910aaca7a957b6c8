#include "worker/model/activation_checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/core/Generator.h>
#include <torch/autograd.h>

namespace diablo::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Generator GeneratorFor(const at::Tensor& x) {
  return at::globalContext().defaultGenerator(x.device());
}

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos,
                            const at::Tensor& sin, const at::Tensor& mask, bool causal,
                            int64_t index, LlamaDecoderLayerImpl* layer) {
    ctx->save_for_backward({x, cos, sin, mask});
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["index"] = index;
    ctx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    ctx->saved_data["rng"] = GeneratorFor(x).get_state();
    at::NoGradGuard no_grad;
    return layer->forward(x, MakeContext(cos, sin, mask, causal), nullptr, index);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    auto* layer = reinterpret_cast<LlamaDecoderLayerImpl*>(ctx->saved_data["layer"].toInt());
    at::Tensor x = saved[0].detach().requires_grad_(true);
    at::Generator generator = GeneratorFor(x);
    at::Tensor rng_now = generator.get_state();
    generator.set_state(ctx->saved_data["rng"].toTensor());
    at::Tensor y;
    {
      at::AutoGradMode enable(true);
      y = layer->forward(
          x, MakeContext(saved[1], saved[2], saved[3], ctx->saved_data["causal"].toBool()), nullptr,
          ctx->saved_data["index"].toInt());
    }
    generator.set_state(rng_now);
    // Accumulates into the layer's trainable parameters' .grad, as the
    // uncheckpointed graph would have.
    torch::autograd::backward({y}, {grad_outputs[0]});
    return {x.grad(),     at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }

 private:
  static AttentionContext MakeContext(const at::Tensor& cos, const at::Tensor& sin,
                                      const at::Tensor& mask, bool causal) {
    AttentionContext context;
    context.cos = cos;
    context.sin = sin;
    if (mask.numel() > 0) context.mask = mask;
    context.causal = causal;
    return context;
  }
};

}  // namespace

at::Tensor CheckpointedLayerForward(LlamaDecoderLayerImpl& layer, const at::Tensor& x,
                                    const AttentionContext& context, int64_t index) {
  // With frozen embeddings the first layer's input needs no gradient, and a
  // function none of whose inputs needs one would never run its backward.
  at::Tensor input = x.requires_grad() ? x : x.detach().requires_grad_(true);
  return CheckpointFunction::apply(
      input, context.cos, context.sin,
      // apply() cannot take undefined tensors: an empty one stands for "no mask".
      context.mask.has_value() ? *context.mask : at::empty({0}, x.options()), context.causal, index,
      &layer);
}

}  // namespace diablo::model
