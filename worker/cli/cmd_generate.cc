// `diablo generate`: continue prompts with the model (and an adapter), greedy
// or sampled, one prompt or a batch.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "text/chat_template.h"
#include "worker/cli/commands.h"
#include "worker/cli/model_session.h"
#include "worker/model/generate.h"

namespace diablo::cli {
namespace {

struct GenerateFlags {
  ModelOptions model;
  std::vector<std::string> prompts;
  bool chat = false;
  std::string system;
  std::string template_name;
  bool json = false;
  model::GenerationOptions generation;
};

// Each prompt's token ids: as plain text, or as a user turn of the chat
// template (the model's, or --template's).
std::vector<std::vector<int64_t>> EncodePrompts(const GenerateFlags& f,
                                                const model::Tokenizer& tokenizer) {
  std::vector<std::vector<int64_t>> prompts;
  for (const std::string& prompt : f.prompts) {
    std::vector<int32_t> ids;
    if (f.chat || !f.template_name.empty()) {
      model::ChatTemplate chat =
          f.template_name.empty()
              ? model::ChatTemplate::ForModel(f.model.model, tokenizer)
              : model::ChatTemplate::FromName(f.template_name, model::TemplateTokensOf(tokenizer));
      std::vector<model::ChatMessage> messages;
      if (!f.system.empty()) messages.push_back({"system", f.system});
      messages.push_back({"user", prompt});
      ids =
          model::TokenizeChat(tokenizer, chat.Render(messages, /*add_generation_prompt=*/true)).ids;
    } else {
      ids = tokenizer.Encode(prompt, /*add_special=*/true);
    }
    if (ids.empty()) throw std::invalid_argument("a prompt encodes to no tokens");
    prompts.emplace_back(ids.begin(), ids.end());
  }
  return prompts;
}

}  // namespace

Runner RegisterGenerate(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "generate",
      "Generate text from one or more prompts (several --prompt run as one batch).\n"
      "Greedy by default; --temperature > 0 samples (with --top-k / --top-p).\n\n"
      "Examples:\n"
      "  diablo generate --model SmolLM2-135M-Instruct.Q4_1.gguf --chat --prompt 'What is 2+2?'\n"
      "  diablo generate --model M --adapter out/adapter --prompt 'Once upon a time' "
      "--temperature 0.7 --top-p 0.9 --seed 1");
  auto f = std::make_shared<GenerateFlags>();
  AddModelOptions(*cmd, f->model);
  cmd->add_option("--prompt,-p", f->prompts, "Prompt text (repeat for a batch)")->required();
  cmd->add_flag("--chat", f->chat, "Wrap each prompt as a user turn in the model's chat template");
  cmd->add_option("--system", f->system, "System message for --chat");
  cmd->add_option(
      "--template", f->template_name,
      "Chat template to use instead of the model's: chatml, llama2, llama3, mistral, alpaca");
  cmd->add_option("--max-new-tokens,-n", f->generation.max_new_tokens, "Tokens to generate at most")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--temperature", f->generation.temperature, "0 = greedy")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", f->generation.top_k, "Sample from the k most likely tokens (0 = off)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", f->generation.top_p, "Nucleus sampling mass (1 = off)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", f->generation.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--stop", f->generation.stop_strings, "Stop when the output contains this text");
  cmd->add_flag("--json", f->json, "Print one JSON object per prompt (text, tokens, stop reason)");
  return [f] {
    ModelSession session = OpenModel(f->model);
    const model::Tokenizer& tokenizer = *session.tokenizer;
    const std::vector<std::vector<int64_t>> prompts = EncodePrompts(*f, tokenizer);
    model::GenerationOptions options = f->generation;
    options.stop_ids = model::EndOfTurnIds(tokenizer);
    options.decode = [&tokenizer](const std::vector<int64_t>& ids) {
      std::vector<int32_t> ids32(ids.begin(), ids.end());
      return tokenizer.Decode(ids32, /*skip_special=*/true);
    };
    auto results = model::Generate(*session.loaded.model, prompts, options);
    for (size_t i = 0; i < results.size(); ++i) {
      std::vector<int32_t> ids(results[i].tokens.begin(), results[i].tokens.end());
      const std::string text = tokenizer.Decode(ids, /*skip_special=*/true);
      if (f->json) {
        nlohmann::json j = {{"prompt", f->prompts[i]},
                            {"text", text},
                            {"tokens", results[i].tokens},
                            {"stop_reason", results[i].stop_reason}};
        std::printf("%s\n", j.dump().c_str());
      } else {
        if (results.size() > 1) std::printf("--- %zu ---\n", i + 1);
        std::printf("%s\n", text.c_str());
      }
    }
    return 0;
  };
}

}  // namespace diablo::cli
