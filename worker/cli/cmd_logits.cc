// `diablo logits`: the model's next-token logits for a text, written to a
// safetensors file (input_ids I64 [tokens], logits F32 [tokens, vocab]) for
// comparison with other implementations.
#include <ATen/ATen.h>

#include <cstdio>
#include <cstring>

#include "formats/safetensors.h"
#include "worker/cli/commands.h"
#include "worker/cli/model_session.h"

namespace diablo::cli {

Runner RegisterLogits(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "logits",
      "Compute the logits of every position of a text and write them to a safetensors file\n"
      "(tensors input_ids [tokens] and logits [tokens, vocab], fp32).\n\n"
      "Example:\n"
      "  diablo logits --model SmolLM2-135M-Instruct.Q4_1.gguf --text 'Hello' --out "
      "logits.safetensors");
  auto options = std::make_shared<ModelOptions>();
  auto text = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto no_special = std::make_shared<bool>(false);
  AddModelOptions(*cmd, *options);
  cmd->add_option("--text,-t", *text, "Text to score")->required();
  cmd->add_option("--out,-o", *out, "Output .safetensors file")->required();
  cmd->add_flag("--no-special", *no_special, "Do not add the model's BOS/EOS tokens");
  return [options, text, out, no_special] {
    ModelSession session = OpenModel(*options);
    std::vector<int32_t> ids32 = session.tokenizer->Encode(*text, !*no_special);
    if (ids32.empty()) throw std::invalid_argument("the text encodes to no tokens");
    std::vector<int64_t> ids(ids32.begin(), ids32.end());
    at::Tensor logits;
    {
      at::NoGradGuard no_grad;
      logits =
          session.loaded.model->forward(at::tensor(ids, at::kLong).unsqueeze(0))[0].contiguous();
    }
    auto bytes = [](const void* p, size_t n) {
      return std::span<const uint8_t>(static_cast<const uint8_t*>(p), n);
    };
    std::vector<model::SafetensorsEntry> entries = {
        {"input_ids",
         model::SafetensorsDtype::kI64,
         {static_cast<int64_t>(ids.size())},
         bytes(ids.data(), ids.size() * sizeof(int64_t))},
        {"logits",
         model::SafetensorsDtype::kF32,
         {logits.size(0), logits.size(1)},
         bytes(logits.data_ptr<float>(), logits.numel() * sizeof(float))},
    };
    model::WriteSafetensors(*out, std::move(entries), {{"model", options->model}});
    std::fprintf(stderr, "wrote %s: %zu tokens x %lld logits\n", out->c_str(), ids.size(),
                 static_cast<long long>(logits.size(1)));
    return 0;
  };
}

}  // namespace diablo::cli
