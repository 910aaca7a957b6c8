// Our byte-level BPE and chat templates against Hugging Face as the
// reference: tiny vocabularies of each pre-tokenizer style are trained by
// tokenizers' BpeTrainer (hf_reference.py), saved as tokenizer.json, and both
// sides encode the same texts; the family templates are rendered by
// transformers' apply_chat_template from their Jinja source.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/text/test_util.h"
#include "text/bpe_tokenizer.h"
#include "text/chat_template.h"
#include "text/normalizer.h"

namespace diablo::model {
namespace {

using nlohmann::json;
using testing::ScratchDir;

std::string Shown(const std::string& text) { return json(text).dump(); }

class TrainedVocabulary : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainedVocabulary, IdsAndDecodingEqualHuggingFace) {
  if (testing::VenvPython().empty()) GTEST_SKIP() << "no test venv (run scripts/setup.sh)";
  ScratchDir dir;
  const std::vector<std::string> texts = testing::ReferenceTexts();
  testing::WriteFile(dir / "request.json", json{{"texts", texts}}.dump());
  const std::string kind = GetParam();
  const int status =
      testing::RunReference("train " + kind + " '" + (dir / "tok") + "' '" +
                                (dir / "request.json") + "' '" + (dir / "out.json") + "'",
                            dir / "log.txt");
  ASSERT_EQ(status, 0) << testing::ReadText(dir / "log.txt");
  const json ref = testing::ReadJson(dir / "out.json");

  const auto tokenizer = LoadTokenizer(dir / "tok/tokenizer.json");
  for (size_t i = 0; i < texts.size(); ++i) {
    SCOPED_TRACE("text #" + std::to_string(i) + " " + Shown(texts[i]));
    EXPECT_EQ(tokenizer->Encode(texts[i], true), ref["ids"][i].get<std::vector<int32_t>>());
    const auto plain = tokenizer->Encode(texts[i], false);
    EXPECT_EQ(plain, ref["ids_no_special"][i].get<std::vector<int32_t>>());
    EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(texts[i], true)),
              ref["decoded"][i].get<std::string>());
    // A prefix space is part of the tokens, so decoding keeps it; NFC
    // decodes to the normalised text.
    if (kind != "gpt2_prefix_space" && kind != "qwen2") {
      EXPECT_EQ(tokenizer->Decode(plain), texts[i]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Styles, TrainedVocabulary,
                         ::testing::Values("gpt2", "gpt2_prefix_space", "llama3", "qwen2",
                                           "smollm"),
                         [](const auto& info) { return info.param; });

TEST(Nfc, EqualsPythonUnicodedata) {
  if (testing::VenvPython().empty()) GTEST_SKIP() << "no test venv (run scripts/setup.sh)";
  ScratchDir dir;
  const int status = testing::RunReference("nfc '" + (dir / "out.json") + "'", dir / "log.txt");
  ASSERT_EQ(status, 0) << testing::ReadText(dir / "log.txt");
  const json cases = testing::ReadJson(dir / "out.json");
  ASSERT_GT(cases.size(), 5000u);
  size_t failures = 0;
  for (const json& c : cases) {
    const std::string input = c[0].get<std::string>(), expected = c[1].get<std::string>();
    const NormalizedText got = NormalizeNfc(input);
    if (got.text != expected && ++failures <= 10) {
      ADD_FAILURE() << "NFC(" << Shown(input) << ") = " << Shown(got.text) << ", want "
                    << Shown(expected);
    }
    ASSERT_EQ(got.source_begin.size(), got.text.size());
    if (!got.text.empty()) {  // reordering may move marks, but all input is covered
      EXPECT_EQ(*std::max_element(got.source_end.begin(), got.source_end.end()), input.size());
      EXPECT_EQ(*std::min_element(got.source_begin.begin(), got.source_begin.end()), 0u);
    }
  }
  EXPECT_EQ(failures, 0u) << "of " << cases.size() << " cases";
}

std::vector<std::vector<ChatMessage>> Conversations() {
  return {
      {{"user", "Hi"}},
      {{"system", "Be brief."},
       {"user", " What is 2+2? "},
       {"assistant", " 4 "},
       {"user", "And 3+3?"}},
      {{"user", "Hello"},
       {"assistant", "Hi there!\n"},
       {"user", "Tell me a joke"},
       {"assistant", "No."}},
      {{"system", "S"}, {"user", "U"}},
      {{"user", "  ünïcödé \t\n"}, {"assistant", "\n答案 👍\n"}},
      {{"assistant", "I speak first"}},
      {{"user", "a"}, {"user", "b"}},
      {{"system", "You are a pirate."}, {"user", "Ahoy"}, {"assistant", "Arr."}},
  };
}

TEST(ChatTemplates, RenderingEqualsApplyChatTemplate) {
  if (testing::VenvPython().empty()) GTEST_SKIP() << "no test venv (run scripts/setup.sh)";
  ScratchDir dir;
  const auto conversations = Conversations();
  json chats = json::array();
  for (size_t c = 0; c < conversations.size(); ++c) {
    json messages = json::array();
    for (const auto& m : conversations[c])
      messages.push_back({{"role", m.role}, {"content", m.content}});
    chats.push_back({{"messages", messages}, {"add_generation_prompt", c % 2 == 1}});
  }
  testing::WriteFile(dir / "request.json", json{{"chats", chats}}.dump());
  const int status = testing::RunReference(
      "chat '" + (dir / "request.json") + "' '" + (dir / "out.json") + "'", dir / "log.txt");
  ASSERT_EQ(status, 0) << testing::ReadText(dir / "log.txt");
  const json ref = testing::ReadJson(dir / "out.json");
  ASSERT_EQ(ref.size(), 4u) << "chatml, llama2, llama3 and mistral templates expected";

  for (const auto& [name, spec] : ref.items()) {
    SCOPED_TRACE("template " + name);
    const ChatTemplate t = ChatTemplate::FromJinja(
        spec["source"].get<std::string>(),
        {spec["bos"].get<std::string>(), spec["eos"].get<std::string>()}, name);
    EXPECT_EQ(t.name(), name) << "family detected from the Jinja source";
    for (size_t c = 0; c < conversations.size(); ++c) {
      SCOPED_TRACE("conversation #" + std::to_string(c));
      const json& expected = spec["renderings"][c];
      if (expected.is_null()) {
        EXPECT_THROW(t.Render(conversations[c], c % 2 == 1), std::invalid_argument)
            << "the reference template refuses this conversation";
        continue;
      }
      const RenderedChat chat = t.Render(conversations[c], c % 2 == 1);
      EXPECT_EQ(chat.text, expected.get<std::string>());
      // Every assistant reply is marked: its (stripped) text lies in a span.
      size_t span = 0;
      for (const auto& m : conversations[c]) {
        if (m.role != "assistant") continue;
        ASSERT_LT(span, chat.response_spans.size());
        const auto [b, e] = chat.response_spans[span++];
        const std::string reply = chat.text.substr(b, e - b);
        const std::string core = m.content.substr(
            m.content.find_first_not_of(" \n"),
            m.content.find_last_not_of(" \n") - m.content.find_first_not_of(" \n") + 1);
        EXPECT_NE(reply.find(core), std::string::npos) << Shown(reply) << " lacks " << Shown(core);
        EXPECT_TRUE(reply.ends_with(name == "llama3"   ? "<|eot_id|>"
                                    : name == "chatml" ? "<|im_end|>"
                                                       : "</s>"))
            << Shown(reply);
      }
      EXPECT_EQ(span, chat.response_spans.size());
    }
  }
}

}  // namespace
}  // namespace diablo::model
