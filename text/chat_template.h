// Chat templates: turning a conversation into the exact text a model was
// fine-tuned on, and telling which parts of that text are the model's own
// replies (training learns from those and masks the prompt).  The family is
// recognised from the Jinja template a model ships (GGUF
// tokenizer.chat_template, tokenizer_config.json chat_template) and rendered
// here in C++; the output equals Hugging Face's apply_chat_template.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/tokenizer.h"

namespace diablo::model {

enum class ChatFamily {
  kChatML,   // <|im_start|>role\n...<|im_end|>\n  (SmolLM2, Qwen2)
  kLlama2,   // <s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] ... </s>
  kLlama3,   // <|begin_of_text|><|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
  kMistral,  // <s>[INST] ... [/INST]...</s>  (no system role)
  kAlpaca,   // ### Instruction: / ### Input: / ### Response:
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (ChatML and Llama-3 accept any)
  std::string content;
};

// A rendered conversation.  response_spans are the byte ranges of `text` that
// the model itself produces: each assistant reply and the end-of-turn marker
// after it.  Everything else is prompt.
struct RenderedChat {
  std::string text;
  std::vector<std::pair<size_t, size_t>> response_spans;
  // Where the last reply starts (text.size() when there is none): text before
  // it is the prompt a generation request would send.
  size_t prompt_end() const;
};

// The special tokens' spellings the Llama-2 / Llama-3 / Mistral templates
// write into the text (bos_token / eos_token in the Jinja source).
struct TemplateTokens {
  std::string bos;
  std::string eos;
};
// The spellings of a tokenizer's BOS and EOS ("" where it has none).
TemplateTokens TemplateTokensOf(const Tokenizer& tokenizer);

class ChatTemplate {
 public:
  // A family named by the user: chatml, llama2, llama3, mistral, alpaca.
  // Throws std::invalid_argument listing the names for anything else.
  // ChatML given this way adds no default system prompt.
  static ChatTemplate FromName(std::string_view name, TemplateTokens tokens);
  // Recognises the family of a Jinja chat template by its markers; `origin`
  // names where it came from in errors.  Throws FormatError for a template
  // that is not one of the families, suggesting --template.
  static ChatTemplate FromJinja(const std::string& source, TemplateTokens tokens,
                                const std::string& origin);
  // The template a model path carries: tokenizer.chat_template of a .gguf
  // file, or chat_template in tokenizer_config.json (or chat_template.jinja)
  // of a model directory / beside a tokenizer.json.  Throws FormatError when
  // there is none or it is not recognised.
  static ChatTemplate ForModel(const std::string& model_path, const Tokenizer& tokenizer);

  ChatFamily family() const { return family_; }
  std::string name() const;
  // The system prompt ChatML adds when a conversation has none (SmolLM2's
  // and Qwen2's templates carry one).
  const std::optional<std::string>& default_system() const { return default_system_; }

  // Renders messages like apply_chat_template(messages, tokenize=False,
  // add_generation_prompt=...).  Throws std::invalid_argument for a
  // conversation the template refuses (e.g. Llama-2 and Mistral need
  // user/assistant turns alternating from a user turn; Alpaca takes one user
  // turn and an optional assistant reply).
  RenderedChat Render(std::span<const ChatMessage> messages, bool add_generation_prompt) const;
  // One instruction example: Alpaca's three sections, or for the chat
  // families a user turn (instruction, then input after a blank line) and
  // the response as the assistant turn.  An empty response renders the
  // prompt only, ready for generation.
  RenderedChat RenderInstruction(std::string_view instruction, std::string_view input,
                                 std::string_view response) const;

 private:
  ChatTemplate(ChatFamily family, TemplateTokens tokens)
      : family_(family), tokens_(std::move(tokens)) {}
  RenderedChat RenderChatML(std::span<const ChatMessage> messages,
                            bool add_generation_prompt) const;
  RenderedChat RenderLlama2(std::span<const ChatMessage> messages) const;
  RenderedChat RenderLlama3(std::span<const ChatMessage> messages,
                            bool add_generation_prompt) const;
  RenderedChat RenderMistral(std::span<const ChatMessage> messages) const;
  RenderedChat RenderAlpaca(std::string_view instruction, std::string_view input,
                            std::optional<std::string_view> response) const;

  ChatFamily family_;
  TemplateTokens tokens_;
  std::optional<std::string> default_system_;
};

// A rendered conversation as token ids with a flag per token: 1 when the
// token overlaps a response span (training computes the loss on it), 0 for
// prompt.  The text is encoded whole (so tokens are what the model would see)
// with add_special false, as the templates already write BOS where the
// model wants it.
struct TokenizedChat {
  std::vector<int32_t> ids;
  std::vector<uint8_t> is_response;
};
TokenizedChat TokenizeChat(const Tokenizer& tokenizer, const RenderedChat& chat);

}  // namespace diablo::model
