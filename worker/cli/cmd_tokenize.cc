// `diablo tokenize --model M --text T`: the token ids a model's tokenizer
// gives a text, as one JSON array — the quickest check that training data
// and prompts are cut the way the model expects.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "text/tokenizer.h"
#include "worker/cli/commands.h"

namespace diablo::cli {

Runner RegisterTokenize(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "tokenize",
      "Print the token ids of a text as a JSON array.\n"
      "The model is a .gguf file, a tokenizer.json / tokenizer.model, or a model directory.\n"
      "Special tokens written in the text (<|im_start|>) are recognised; BOS/EOS are added\n"
      "as the model's metadata says unless --no-special.\n\n"
      "Examples:\n"
      "  diablo tokenize --model SmolLM2-135M-Instruct.Q4_1.gguf --text 'Hello world'\n"
      "  diablo tokenize --model ./Llama-3.2-1B --text 'Hi' --no-special --decode");
  auto model = std::make_shared<std::string>();
  auto text = std::make_shared<std::string>();
  auto no_special = std::make_shared<bool>(false);
  auto decode = std::make_shared<bool>(false);
  cmd->add_option("--model,-m", *model, "Model file or directory")
      ->required()
      ->check(CLI::ExistingPath);
  cmd->add_option("--text,-t", *text, "Text to tokenize")->required();
  cmd->add_flag("--no-special", *no_special, "Do not add BOS/EOS");
  cmd->add_flag("--decode", *decode, "Also print the ids decoded back to text, on a second line");
  return [model, text, no_special, decode] {
    const auto tokenizer = model::LoadTokenizer(*model);
    const std::vector<int32_t> ids = tokenizer->Encode(*text, /*add_special=*/!*no_special);
    std::printf("%s\n", nlohmann::json(ids).dump().c_str());
    if (*decode) std::printf("%s\n", tokenizer->Decode(ids).c_str());
    return 0;
  };
}

}  // namespace diablo::cli
