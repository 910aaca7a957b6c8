// Acceptance on the real model: the tokenizer read from the SmolLM2 GGUF
// gives the same ids as Hugging Face (transformers loading the same file),
// decodes back to the text, and the chat template it carries renders and
// tokenizes exactly as apply_chat_template does.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/text/test_util.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "text/unicode_classes.h"

namespace diablo::model {
namespace {

using nlohmann::json;
using testing::ScratchDir;

std::string ModelPath() {
  const std::string path = DIABLO_MODEL_GGUF;
  return !path.empty() && std::filesystem::exists(path) ? path : "";
}

bool HasNumber(const std::string& text) {
  for (const TextUnit& u : DecodeUtf8(text)) {
    if (u.cls == CharClass::kNumber) return true;
  }
  return false;
}

std::vector<std::vector<ChatMessage>> Conversations() {
  return {
      {{"user", "Hi"}},
      {{"system", "You are terse."}, {"user", "What is 2+2?"}, {"assistant", "4"}},
      {{"user", "Hello"}, {"assistant", "Hi there! How can I help?"}, {"user", "Tell me a joke"}},
      {{"user", "Écris un haïku sur l'été 🌞"}, {"assistant", "Soleil sur la mer\n\tvagues\n"}},
  };
}

class SmolLM2 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (ModelPath().empty()) GTEST_SKIP() << "no SmolLM2 GGUF (run scripts/setup.sh)";
    if (testing::VenvPython().empty()) GTEST_SKIP() << "no test venv (run scripts/setup.sh)";
    json chats = json::array();
    for (size_t c = 0; c < conversations_.size(); ++c) {
      json messages = json::array();
      for (const auto& m : conversations_[c])
        messages.push_back({{"role", m.role}, {"content", m.content}});
      chats.push_back({{"messages", messages}, {"add_generation_prompt", c != 1}});
    }
    const json request = {{"texts", texts_}, {"chats", chats}};
    const std::string model_key =
        ModelPath() + std::to_string(std::filesystem::file_size(ModelPath()));
    ref_ = testing::CachedReference("gguf '" + ModelPath() + "'", request.dump(), model_key, dir_);
    ASSERT_TRUE(ref_.is_object()) << "no reference output";
    tokenizer_ = LoadTokenizer(ModelPath());
  }

  ScratchDir dir_;
  std::vector<std::string> texts_ = testing::ReferenceTexts();
  std::vector<std::vector<ChatMessage>> conversations_ = Conversations();
  json ref_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(SmolLM2, MetadataGivesVocabularyAndSpecialIds) {
  EXPECT_EQ(tokenizer_->vocab_size(), 49152u);
  EXPECT_EQ(tokenizer_->bos_id(), 1);
  EXPECT_EQ(tokenizer_->eos_id(), 2);
  EXPECT_EQ(tokenizer_->IdToToken(1), "<|im_start|>");
  EXPECT_EQ(tokenizer_->special_token_ids().size(), 17u);
  EXPECT_TRUE(tokenizer_->IsSpecial(0));
}

TEST_F(SmolLM2, IdsEqualHuggingFace) {
  for (size_t i = 0; i < texts_.size(); ++i) {
    SCOPED_TRACE("text #" + std::to_string(i) + " " + json(texts_[i]).dump());
    const auto ids = tokenizer_->Encode(texts_[i], true);
    EXPECT_EQ(ids, ref_["ids"][i].get<std::vector<int32_t>>());
    EXPECT_EQ(tokenizer_->Encode(texts_[i], false),
              ref_["ids_no_special"][i].get<std::vector<int32_t>>());
    // transformers' GGUF loader drops SmolLM2's digit split; elsewhere it
    // must agree with us as it is.
    if (!HasNumber(texts_[i])) {
      EXPECT_EQ(ids, ref_["ids_gguf_loader"][i].get<std::vector<int32_t>>());
    }
  }
}

TEST_F(SmolLM2, DecodeRestoresTheText) {
  for (size_t i = 0; i < texts_.size(); ++i) {
    SCOPED_TRACE("text #" + std::to_string(i) + " " + json(texts_[i]).dump());
    const auto ids = tokenizer_->Encode(texts_[i]);
    EXPECT_EQ(tokenizer_->Decode(ids), texts_[i]);
    EXPECT_EQ(tokenizer_->Decode(ids), ref_["decoded"][i].get<std::string>());
  }
}

TEST_F(SmolLM2, ChatTemplateEqualsApplyChatTemplate) {
  const ChatTemplate t = ChatTemplate::ForModel(ModelPath(), *tokenizer_);
  EXPECT_EQ(t.family(), ChatFamily::kChatML);
  EXPECT_EQ(t.default_system(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  for (size_t c = 0; c < conversations_.size(); ++c) {
    SCOPED_TRACE("conversation #" + std::to_string(c));
    const RenderedChat chat = t.Render(conversations_[c], c != 1);
    EXPECT_EQ(chat.text, ref_["chats"][c].get<std::string>());
    EXPECT_EQ(TokenizeChat(*tokenizer_, chat).ids, ref_["chat_ids"][c].get<std::vector<int32_t>>());
  }
}

TEST_F(SmolLM2, TrainingMaskCoversExactlyTheRepliesAndTheirEndMarkers) {
  const ChatTemplate t = ChatTemplate::ForModel(ModelPath(), *tokenizer_);
  const TokenizedChat tokens = TokenizeChat(*tokenizer_, t.Render(conversations_[3], false));
  std::vector<int32_t> reply, prompt;
  for (size_t i = 0; i < tokens.ids.size(); ++i) {
    (tokens.is_response[i] ? reply : prompt).push_back(tokens.ids[i]);
  }
  EXPECT_EQ(tokenizer_->Decode(reply), "Soleil sur la mer\n\tvagues\n<|im_end|>");
  EXPECT_EQ(tokenizer_->Decode(prompt),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nÉcris un haïku sur l'été 🌞<|im_end|>\n"
            "<|im_start|>assistant\n\n");
}

}  // namespace
}  // namespace diablo::model
