// The real SmolLM2 GGUF vocabulary exported as Hugging Face files: transformers'
// AutoTokenizer loads them and gives our ids on the reference texts and on
// tests/worker/model/prompts.txt (digits included, which transformers' own GGUF
// loader gets wrong), decodes as we do, and renders the chat template the
// GGUF carries.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "tests/text/test_util.h"
#include "text/tokenizer.h"
#include "text/tokenizer_export.h"

namespace diablo::model {
namespace {

using nlohmann::json;
using testing::ScratchDir;

std::vector<std::string> Prompts() {
  std::ifstream in(std::string(DIABLO_SOURCE_DIR) + "/tests/worker/model/prompts.txt");
  std::vector<std::string> prompts;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) prompts.push_back(line);
  }
  return prompts;
}

TEST(SmolLM2Export, AutoTokenizerOnTheExportedFilesGivesOurIds) {
  const std::string model = DIABLO_MODEL_GGUF;
  if (model.empty() || !std::filesystem::exists(model)) GTEST_SKIP() << "no SmolLM2 GGUF";
  if (testing::VenvPython().empty()) GTEST_SKIP() << "no test venv (run scripts/setup.sh)";
  ScratchDir dir;
  const GgufFile file = GgufFile::Open(model);
  const HfTokenizerFiles files = ExportGgufTokenizer(file, model);
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "generation_config.json"}) {
    ASSERT_TRUE(files.count(name)) << name;
  }
  std::filesystem::create_directories(dir / "export");
  for (const auto& [name, contents] : files) testing::WriteFile(dir / ("export/" + name), contents);

  std::vector<std::string> texts = testing::ReferenceTexts();
  for (const std::string& p : Prompts()) texts.push_back(p);
  const json chats = json::array({{{"messages", {{{"role", "user"}, {"content", "What is 2+2?"}}}},
                                   {"add_generation_prompt", true}}});
  testing::WriteFile(dir / "request.json", json{{"texts", texts}, {"chats", chats}}.dump());
  const int status =
      testing::RunReference("auto '" + (dir / "export") + "' '" + (dir / "request.json") + "' '" +
                                (dir / "out.json") + "'",
                            dir / "log.txt");
  ASSERT_EQ(status, 0) << testing::ReadText(dir / "log.txt");
  const json out = testing::ReadJson(dir / "out.json");

  const auto ours = LoadTokenizer(model);
  for (size_t i = 0; i < texts.size(); ++i) {
    SCOPED_TRACE("text #" + std::to_string(i) + " " + json(texts[i]).dump());
    EXPECT_EQ(out["ids"][i].get<std::vector<int32_t>>(), ours->Encode(texts[i], true));
    EXPECT_EQ(out["ids_no_special"][i].get<std::vector<int32_t>>(), ours->Encode(texts[i], false));
    EXPECT_EQ(out["decoded"][i].get<std::string>(), ours->Decode(ours->Encode(texts[i], true)));
  }
  EXPECT_EQ(out["chats"][0].get<std::string>(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
  const json generation = json::parse(files.at("generation_config.json"));
  EXPECT_EQ(generation["bos_token_id"], 1);
  EXPECT_EQ(generation["eos_token_id"], 2);
}

}  // namespace
}  // namespace diablo::model
