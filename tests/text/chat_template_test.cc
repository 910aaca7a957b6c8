// Unit tests of the chat templates that need no Python: the Alpaca format,
// family detection and its errors, response spans, and the training mask.
// hf_reference_test.cc and smollm_e2e_test.cc compare renderings with
// Hugging Face.
#include "text/chat_template.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "tests/text/test_util.h"
#include "text/bpe_tokenizer.h"
#include "text/unicode_classes.h"

namespace diablo::model {
namespace {

using ::testing::HasSubstr;

std::string SpanText(const RenderedChat& chat, size_t i) {
  const auto [b, e] = chat.response_spans.at(i);
  return chat.text.substr(b, e - b);
}

TEST(Alpaca, InstructionWithInputHasThreeSections) {
  const ChatTemplate t = ChatTemplate::FromName("alpaca", {"<s>", "</s>"});
  const RenderedChat chat = t.RenderInstruction("Add the numbers.", "2 and 3", "5");
  EXPECT_EQ(chat.text,
            "Below is an instruction that describes a task, paired with an input that provides "
            "further context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n5</s>");
  ASSERT_EQ(chat.response_spans.size(), 1u);
  EXPECT_EQ(SpanText(chat, 0), "5</s>");
  EXPECT_EQ(chat.prompt_end(), chat.text.size() - 5);
}

TEST(Alpaca, WithoutInputOrResponseIsAPromptForGeneration) {
  const ChatTemplate t = ChatTemplate::FromName("alpaca", {"", ""});
  const RenderedChat chat = t.RenderInstruction("Say hi.", "", "");
  EXPECT_EQ(chat.text,
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n");
  EXPECT_TRUE(chat.response_spans.empty());
  EXPECT_EQ(chat.prompt_end(), chat.text.size());
  const std::vector<ChatMessage> two_users = {{"user", "a"}, {"user", "b"}};
  EXPECT_THROW(t.Render(two_users, false), std::invalid_argument);
}

TEST(ChatML, RenderInstructionIsAUserTurnAndAnAssistantTurn) {
  const ChatTemplate t = ChatTemplate::FromName("chatml", {});
  const RenderedChat chat = t.RenderInstruction("Translate:", "chat", "cat");
  EXPECT_EQ(
      chat.text,
      "<|im_start|>user\nTranslate:\n\nchat<|im_end|>\n<|im_start|>assistant\ncat<|im_end|>\n");
  EXPECT_EQ(SpanText(chat, 0), "cat<|im_end|>");
  EXPECT_FALSE(t.default_system());  // named by the user: no default system prompt
}

TEST(Llama2, RepliesAreStrippedAndEndWithEos) {
  const ChatTemplate t = ChatTemplate::FromName("llama2", {"<s>", "</s>"});
  const std::vector<ChatMessage> messages = {
      {"system", "Be brief."}, {"user", " Hi "}, {"assistant", " Hello! "}, {"user", "Bye"}};
  const RenderedChat chat = t.Render(messages, true);
  EXPECT_EQ(
      chat.text,
      "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi [/INST] Hello! </s><s>[INST] Bye [/INST]");
  EXPECT_EQ(SpanText(chat, 0), "Hello! </s>");
}

TEST(Mistral, SystemRoleIsRefusedWithAHint) {
  const ChatTemplate t = ChatTemplate::FromName("mistral", {"<s>", "</s>"});
  const std::vector<ChatMessage> messages = {{"system", "x"}, {"user", "y"}};
  try {
    t.Render(messages, false);
    FAIL() << "a system turn was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("no system role"));
  }
}

TEST(Detection, FamiliesAreRecognisedByTheirMarkers) {
  const TemplateTokens tokens{"<s>", "</s>"};
  EXPECT_EQ(ChatTemplate::FromJinja("{{'<|im_start|>' + m}}", tokens, "t").family(),
            ChatFamily::kChatML);
  EXPECT_EQ(ChatTemplate::FromJinja("<|start_header_id|>", tokens, "t").family(),
            ChatFamily::kLlama3);
  EXPECT_EQ(ChatTemplate::FromJinja("[INST] <<SYS>>", tokens, "t").family(), ChatFamily::kLlama2);
  EXPECT_EQ(ChatTemplate::FromJinja("'[INST] ' + c", tokens, "t").family(), ChatFamily::kMistral);
}

TEST(Detection, DefaultSystemPromptIsTakenFromTheLiteralOnly) {
  const std::string smollm =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
      "{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
      "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
  EXPECT_EQ(ChatTemplate::FromJinja(smollm, {}, "t").default_system(), "You are SmolLM");
  const std::string escaped = "{{ '<|im_start|>system\\nLine one.\\nLine two<|im_end|>\\n' }}";
  EXPECT_EQ(ChatTemplate::FromJinja(escaped, {}, "t").default_system(), "Line one.\nLine two");
  const std::string user_system =
      "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>' }}";
  EXPECT_FALSE(ChatTemplate::FromJinja(user_system, {}, "t").default_system());

  const std::vector<ChatMessage> user_only = {{"user", "Hi"}};
  EXPECT_EQ(ChatTemplate::FromJinja(smollm, {}, "t").Render(user_only, false).text,
            "<|im_start|>system\nYou are SmolLM<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

TEST(Detection, UnknownTemplatesSuggestTheTemplateOption) {
  try {
    ChatTemplate::FromJinja("{{ messages[0]['content'] }}", {},
                            "model.gguf: tokenizer.chat_template");
    FAIL() << "an unknown template was accepted";
  } catch (const FormatError& e) {
    EXPECT_THAT(e.what(), HasSubstr("model.gguf: tokenizer.chat_template"));
    EXPECT_THAT(e.what(), HasSubstr("--template"));
  }
  EXPECT_THROW(ChatTemplate::FromJinja("<|start_header_id|> Cutting Knowledge Date", {}, "t"),
               FormatError);
  try {
    ChatTemplate::FromName("vicuna", {});
    FAIL() << "an unknown family name was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("chatml, llama2, llama3, mistral, alpaca"));
  }
}

TEST(Detection, ModelDirectoryTemplateComesFromTokenizerConfig) {
  testing::ScratchDir dir;
  nlohmann::json config = {
      {"chat_template",
       nlohmann::json::array({{{"name", "tool_use"}, {"template", "{{ tools }}"}},
                              {{"name", "default"}, {"template", "<|start_header_id|>{{ x }}"}}})}};
  testing::WriteFile(dir / "tokenizer_config.json", config.dump());
  // A byte-level tokenizer.json so that the directory is a model.
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    AppendUtf8(ByteToChar(static_cast<uint8_t>(b)), &s);
    vocab[s] = b;
  }
  testing::WriteFile(
      dir / "tokenizer.json",
      nlohmann::json{
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
          {"pre_tokenizer", {{"type", "ByteLevel"}}}}
          .dump());
  const auto tokenizer = LoadTokenizer(dir.path().string());
  EXPECT_EQ(ChatTemplate::ForModel(dir.path().string(), *tokenizer).family(), ChatFamily::kLlama3);

  testing::WriteFile(dir / "tokenizer_config.json", "{}");
  try {
    ChatTemplate::ForModel(dir.path().string(), *tokenizer);
    FAIL() << "a model without a chat template was accepted";
  } catch (const FormatError& e) {
    EXPECT_THAT(e.what(), HasSubstr("no chat template"));
    EXPECT_THAT(e.what(), HasSubstr("--template"));
  }
}

TEST(TokenizeChat, MarksTokensThatOverlapAReply) {
  testing::ScratchDir dir;
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    AppendUtf8(ByteToChar(static_cast<uint8_t>(b)), &s);
    vocab[s] = b;
  }
  vocab["<|im_start|>"] = 256;
  vocab["<|im_end|>"] = 257;
  nlohmann::json j = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}}},
      {"added_tokens",
       {{{"id", 256}, {"content", "<|im_start|>"}, {"special", true}},
        {{"id", 257}, {"content", "<|im_end|>"}, {"special", true}}}}};
  testing::WriteFile(dir / "tokenizer.json", j.dump());
  const auto tokenizer = LoadTokenizer(dir / "tokenizer.json");
  const ChatTemplate t = ChatTemplate::FromName("chatml", {});
  const std::vector<ChatMessage> messages = {
      {"user", "Q"}, {"assistant", "AB"}, {"user", "R"}, {"assistant", "C"}};
  const TokenizedChat tokens = TokenizeChat(*tokenizer, t.Render(messages, false));
  std::string marked;
  for (size_t i = 0; i < tokens.ids.size(); ++i) {
    if (tokens.is_response[i])
      marked += tokenizer->Decode(std::vector<int32_t>{tokens.ids[i]}) + "|";
  }
  EXPECT_EQ(marked, "A|B|<|im_end|>|C|<|im_end|>|");
}

}  // namespace
}  // namespace diablo::model
