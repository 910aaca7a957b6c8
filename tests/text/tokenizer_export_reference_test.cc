// Exported tokenizer files against Hugging Face: a vocabulary of each
// pre-tokenizer style, trained by tokenizers (hf_reference.py train), read by
// us and exported again, loads in transformers' AutoTokenizer and gives the
// ids the original tokenizer gives; so does our reading of the export.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/text/test_util.h"
#include "text/tokenizer_export.h"

namespace diablo::model {
namespace {

using nlohmann::json;
using testing::ScratchDir;

class ExportedVocabulary : public ::testing::TestWithParam<std::string> {};

TEST_P(ExportedVocabulary, AutoTokenizerGivesTheOriginalIds) {
  if (testing::VenvPython().empty()) GTEST_SKIP() << "no test venv (run scripts/setup.sh)";
  ScratchDir dir;
  const std::vector<std::string> texts = testing::ReferenceTexts();
  const std::string template_source =
      "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
      "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
  const json chats = json::array(
      {{{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"add_generation_prompt", true}}});
  testing::WriteFile(dir / "request.json", json{{"texts", texts}, {"chats", chats}}.dump());
  int status = testing::RunReference("train " + GetParam() + " '" + (dir / "tok") + "' '" +
                                         (dir / "request.json") + "' '" + (dir / "ref.json") + "'",
                                     dir / "log.txt");
  ASSERT_EQ(status, 0) << testing::ReadText(dir / "log.txt");
  const json ref = testing::ReadJson(dir / "ref.json");

  const BpeSpec spec = ReadTokenizerJsonSpec(dir / "tok/tokenizer.json");
  std::filesystem::create_directories(dir / "export");
  for (const auto& [name, contents] : ExportHfTokenizer(spec, {.chat_template = template_source})) {
    testing::WriteFile(dir / ("export/" + name), contents);
  }
  status = testing::RunReference("auto '" + (dir / "export") + "' '" + (dir / "request.json") +
                                     "' '" + (dir / "out.json") + "'",
                                 dir / "log.txt");
  ASSERT_EQ(status, 0) << testing::ReadText(dir / "log.txt");
  const json out = testing::ReadJson(dir / "out.json");

  const auto ours = LoadTokenizer(dir / "export/tokenizer.json");
  for (size_t i = 0; i < texts.size(); ++i) {
    SCOPED_TRACE("text #" + std::to_string(i) + " " + json(texts[i]).dump());
    EXPECT_EQ(out["ids"][i], ref["ids"][i]);
    EXPECT_EQ(out["ids_no_special"][i], ref["ids_no_special"][i]);
    EXPECT_EQ(out["decoded"][i], ref["decoded"][i]);
    EXPECT_EQ(json(ours->Encode(texts[i], true)), ref["ids"][i]);
  }
  EXPECT_EQ(out["chats"][0], "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

INSTANTIATE_TEST_SUITE_P(Styles, ExportedVocabulary,
                         ::testing::Values("gpt2", "gpt2_prefix_space", "llama3", "qwen2",
                                           "smollm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace diablo::model
