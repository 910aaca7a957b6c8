// Chat template families rendered in C++.  Each Render* writes the same
// characters as the family's reference Jinja template (Hugging Face's
// apply_chat_template) and records where the assistant replies lie.
#include "text/chat_template.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "formats/bounded_json.h"
#include "formats/gguf.h"
#include "text/unicode_classes.h"

namespace diablo::model {
namespace {

constexpr const char* kFamilyNames = "chatml, llama2, llama3, mistral, alpaca";

// Python's str.strip(), which Jinja's trim filter and .strip() call: removes
// Unicode whitespace (and the information separators U+001C..U+001F) at both
// ends.
std::string PyStrip(std::string_view s) {
  const auto units = DecodeUtf8(s);
  auto is_space = [](const TextUnit& u) {
    return u.cls == CharClass::kWhitespace || (u.code_point >= 0x1C && u.code_point <= 0x1F);
  };
  size_t b = 0, e = units.size();
  while (b < e && is_space(units[b])) ++b;
  while (e > b && is_space(units[e - 1])) --e;
  if (b == e) return "";
  return std::string(
      s.substr(units[b].begin, units[e - 1].begin + units[e - 1].size - units[b].begin));
}

// Appends text; when `response`, records it as (part of) a reply, joining it
// to a span that ends exactly where it starts.
class Builder {
 public:
  void Add(std::string_view s, bool response = false) {
    const size_t begin = out_.text.size();
    out_.text += s;
    if (!response || s.empty()) return;
    if (!out_.response_spans.empty() && out_.response_spans.back().second == begin) {
      out_.response_spans.back().second = out_.text.size();
    } else {
      out_.response_spans.emplace_back(begin, out_.text.size());
    }
  }
  RenderedChat Take() { return std::move(out_); }

 private:
  RenderedChat out_;
};

// Llama-2 and Mistral refuse anything but user/assistant turns alternating
// from a user turn (after an optional leading system turn for Llama-2).
void CheckAlternating(std::span<const ChatMessage> turns, const char* family) {
  for (size_t i = 0; i < turns.size(); ++i) {
    const char* want = i % 2 == 0 ? "user" : "assistant";
    if (turns[i].role != want) {
      throw std::invalid_argument(std::string(family) + " chat template: message " +
                                  std::to_string(i + 1) + " has role \"" + turns[i].role +
                                  "\" where \"" + want +
                                  "\" is needed; turns must alternate "
                                  "user/assistant starting with user" +
                                  (std::string(family) == "Mistral" && turns[i].role == "system"
                                       ? " (Mistral's template has no system role: put the "
                                         "instructions in the first user message)"
                                       : ""));
    }
  }
}

// SmolLM2's and Qwen2's ChatML templates write a literal system turn when the
// conversation has none: '<|im_start|>system\n<prompt><|im_end|>\n'.  The
// first such literal whose prompt is plain text is it (a Jinja expression in
// between means the template inserts the user's own system message there).
std::optional<std::string> FindDefaultSystem(const std::string& source) {
  const std::string head = "<|im_start|>system";
  for (size_t at = source.find(head); at != std::string::npos; at = source.find(head, at + 1)) {
    size_t p = at + head.size();
    if (source.compare(p, 1, "\n") == 0) {
      p += 1;
    } else if (source.compare(p, 2, "\\n") == 0) {
      p += 2;  // the escape inside a Jinja string literal
    } else {
      continue;
    }
    const size_t end = source.find("<|im_end|>", p);
    if (end == std::string::npos) continue;
    std::string prompt = source.substr(p, end - p);
    if (prompt.empty() || prompt.find_first_of("'\"{}+") != std::string::npos) continue;
    std::string unescaped;
    for (size_t i = 0; i < prompt.size(); ++i) {
      if (prompt[i] == '\\' && i + 1 < prompt.size()) {
        const char c = prompt[++i];
        unescaped += c == 'n' ? '\n' : c == 't' ? '\t' : c;
      } else {
        unescaped += prompt[i];
      }
    }
    return unescaped;
  }
  return std::nullopt;
}

std::string ReadFileText(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError(path.string() + ": cannot open the file for reading");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// chat_template in tokenizer_config.json: a string, or a list of
// {"name", "template"} of which "default" is the chat one.
std::optional<std::string> TemplateFromConfig(const std::filesystem::path& config_path) {
  nlohmann::json j;
  try {
    j = ParseBoundedJson(ReadFileText(config_path));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(config_path.string() + ": not valid JSON (" + e.what() + ")");
  } catch (const JsonTooDeep& e) {
    throw FormatError(config_path.string() + ": " + e.what());
  }
  if (!j.contains("chat_template")) return std::nullopt;
  const auto& t = j["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    for (const auto& entry : t) {
      if (entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return entry["template"].get<std::string>();
      }
    }
  }
  throw FormatError(config_path.string() +
                    ": chat_template is neither a string nor a list "
                    "holding a \"default\" template");
}

}  // namespace

size_t RenderedChat::prompt_end() const {
  return response_spans.empty() ? text.size() : response_spans.back().first;
}

TemplateTokens TemplateTokensOf(const Tokenizer& tokenizer) {
  TemplateTokens t;
  if (tokenizer.bos_id()) t.bos = tokenizer.IdToToken(*tokenizer.bos_id());
  if (tokenizer.eos_id()) t.eos = tokenizer.IdToToken(*tokenizer.eos_id());
  return t;
}

ChatTemplate ChatTemplate::FromName(std::string_view name, TemplateTokens tokens) {
  if (name == "chatml") return ChatTemplate(ChatFamily::kChatML, std::move(tokens));
  if (name == "llama2") return ChatTemplate(ChatFamily::kLlama2, std::move(tokens));
  if (name == "llama3") return ChatTemplate(ChatFamily::kLlama3, std::move(tokens));
  if (name == "mistral") return ChatTemplate(ChatFamily::kMistral, std::move(tokens));
  if (name == "alpaca") return ChatTemplate(ChatFamily::kAlpaca, std::move(tokens));
  throw std::invalid_argument("unknown chat template \"" + std::string(name) +
                              "\"; known: " + kFamilyNames);
}

ChatTemplate ChatTemplate::FromJinja(const std::string& source, TemplateTokens tokens,
                                     const std::string& origin) {
  auto has = [&](const char* marker) { return source.find(marker) != std::string::npos; };
  const std::string hint = std::string("; pass --template with one of: ") + kFamilyNames;
  if (has("<|im_start|>")) {
    ChatTemplate t(ChatFamily::kChatML, std::move(tokens));
    t.default_system_ = FindDefaultSystem(source);
    return t;
  }
  if (has("<|start_header_id|>")) {
    if (has("Cutting Knowledge Date") || has("tools")) {
      throw FormatError(origin +
                        ": a Llama-3.1-style chat template (tools, knowledge-date "
                        "system prompt) is not rendered by this version; pass --template "
                        "llama3 for the plain Llama-3 format");
    }
    return ChatTemplate(ChatFamily::kLlama3, std::move(tokens));
  }
  if (has("[INST]") && has("<<SYS>>")) return ChatTemplate(ChatFamily::kLlama2, std::move(tokens));
  if (has("[INST]")) {
    if (has("system_message") || has("tools")) {
      throw FormatError(origin +
                        ": a Mistral chat template with system-message or tool "
                        "handling is not rendered by this version; pass --template mistral "
                        "for the original [INST] format");
    }
    return ChatTemplate(ChatFamily::kMistral, std::move(tokens));
  }
  throw FormatError(origin +
                    ": the chat template is not one this version recognises "
                    "(ChatML, Llama-2, Llama-3, Mistral)" +
                    hint);
}

ChatTemplate ChatTemplate::ForModel(const std::string& model_path, const Tokenizer& tokenizer) {
  namespace fs = std::filesystem;
  const std::string hint = std::string("; pass --template with one of: ") + kFamilyNames;
  std::string source, origin;
  if (model_path.size() > 5 && model_path.ends_with(".gguf")) {
    const GgufFile file = GgufFile::Open(model_path);
    if (!file.Has("tokenizer.chat_template")) {
      throw FormatError(model_path + ": no tokenizer.chat_template in the metadata" + hint);
    }
    source = file.GetString("tokenizer.chat_template");
    origin = model_path + ": tokenizer.chat_template";
  } else {
    const fs::path dir =
        fs::is_directory(model_path) ? fs::path(model_path) : fs::path(model_path).parent_path();
    const fs::path config = dir / "tokenizer_config.json", jinja = dir / "chat_template.jinja";
    std::optional<std::string> found;
    if (fs::exists(jinja)) {
      found = ReadFileText(jinja);
      origin = jinja.string();
    } else if (fs::exists(config)) {
      found = TemplateFromConfig(config);
      origin = config.string() + ": chat_template";
    }
    if (!found) {
      throw FormatError(dir.string() +
                        ": no chat template (neither chat_template.jinja nor "
                        "chat_template in tokenizer_config.json)" +
                        hint);
    }
    source = *found;
  }
  return FromJinja(source, TemplateTokensOf(tokenizer), origin);
}

std::string ChatTemplate::name() const {
  switch (family_) {
    case ChatFamily::kChatML:
      return "chatml";
    case ChatFamily::kLlama2:
      return "llama2";
    case ChatFamily::kLlama3:
      return "llama3";
    case ChatFamily::kMistral:
      return "mistral";
    case ChatFamily::kAlpaca:
      return "alpaca";
  }
  return "?";
}

RenderedChat ChatTemplate::Render(std::span<const ChatMessage> messages,
                                  bool add_generation_prompt) const {
  switch (family_) {
    case ChatFamily::kChatML:
      return RenderChatML(messages, add_generation_prompt);
    case ChatFamily::kLlama2:
      return RenderLlama2(messages);
    case ChatFamily::kLlama3:
      return RenderLlama3(messages, add_generation_prompt);
    case ChatFamily::kMistral:
      return RenderMistral(messages);
    case ChatFamily::kAlpaca:
      break;
  }
  // Alpaca: one instruction, optionally answered.
  const bool answered = messages.size() == 2 && messages[1].role == "assistant";
  if (messages.empty() || messages.size() > 2 || messages[0].role != "user" ||
      (messages.size() == 2 && !answered)) {
    throw std::invalid_argument(
        "alpaca template: expects one user message and optionally the "
        "assistant's reply, got " +
        std::to_string(messages.size()) + " messages");
  }
  return RenderAlpaca(
      messages[0].content, "",
      answered ? std::optional<std::string_view>(messages[1].content) : std::nullopt);
}

RenderedChat ChatTemplate::RenderInstruction(std::string_view instruction, std::string_view input,
                                             std::string_view response) const {
  const std::optional<std::string_view> reply =
      response.empty() ? std::nullopt : std::optional<std::string_view>(response);
  if (family_ == ChatFamily::kAlpaca) return RenderAlpaca(instruction, input, reply);
  std::vector<ChatMessage> messages;
  messages.push_back({"user", input.empty()
                                  ? std::string(instruction)
                                  : std::string(instruction) + "\n\n" + std::string(input)});
  if (reply) messages.push_back({"assistant", std::string(*reply)});
  return Render(messages, /*add_generation_prompt=*/!reply);
}

RenderedChat ChatTemplate::RenderChatML(std::span<const ChatMessage> messages,
                                        bool add_generation_prompt) const {
  Builder b;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i == 0 && default_system_ && messages[0].role != "system") {
      b.Add("<|im_start|>system\n" + *default_system_ + "<|im_end|>\n");
    }
    const bool reply = messages[i].role == "assistant";
    b.Add("<|im_start|>" + messages[i].role + "\n");
    b.Add(messages[i].content, reply);
    b.Add("<|im_end|>", reply);
    b.Add("\n");
  }
  if (add_generation_prompt) b.Add("<|im_start|>assistant\n");
  return b.Take();
}

RenderedChat ChatTemplate::RenderLlama2(std::span<const ChatMessage> messages) const {
  std::optional<std::string> system;
  if (!messages.empty() && messages[0].role == "system") {
    system = messages[0].content;
    messages = messages.subspan(1);
  }
  CheckAlternating(messages, "Llama-2");
  Builder b;
  for (size_t i = 0; i < messages.size(); ++i) {
    std::string content = messages[i].content;
    if (i == 0 && system) content = "<<SYS>>\n" + *system + "\n<</SYS>>\n\n" + content;
    if (messages[i].role == "user") {
      b.Add(tokens_.bos + "[INST] " + PyStrip(content) + " [/INST]");
    } else {
      b.Add(" ");
      b.Add(PyStrip(content) + " " + tokens_.eos, /*response=*/true);
    }
  }
  return b.Take();
}

RenderedChat ChatTemplate::RenderLlama3(std::span<const ChatMessage> messages,
                                        bool add_generation_prompt) const {
  Builder b;
  for (size_t i = 0; i < messages.size(); ++i) {
    const bool reply = messages[i].role == "assistant";
    b.Add((i == 0 ? tokens_.bos : "") + "<|start_header_id|>" + messages[i].role +
          "<|end_header_id|>\n\n");
    b.Add(PyStrip(messages[i].content) + "<|eot_id|>", reply);
  }
  if (add_generation_prompt) b.Add("<|start_header_id|>assistant<|end_header_id|>\n\n");
  return b.Take();
}

RenderedChat ChatTemplate::RenderMistral(std::span<const ChatMessage> messages) const {
  CheckAlternating(messages, "Mistral");
  Builder b;
  b.Add(tokens_.bos);
  for (const ChatMessage& m : messages) {
    if (m.role == "user") {
      b.Add("[INST] " + m.content + " [/INST]");
    } else {
      b.Add(m.content + tokens_.eos, /*response=*/true);
    }
  }
  return b.Take();
}

RenderedChat ChatTemplate::RenderAlpaca(std::string_view instruction, std::string_view input,
                                        std::optional<std::string_view> response) const {
  Builder b;
  if (input.empty()) {
    b.Add(
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n");
    b.Add(instruction);
  } else {
    b.Add(
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n");
    b.Add(instruction);
    b.Add("\n\n### Input:\n");
    b.Add(input);
  }
  b.Add("\n\n### Response:\n");
  if (response) b.Add(std::string(*response) + tokens_.eos, /*response=*/true);
  return b.Take();
}

TokenizedChat TokenizeChat(const Tokenizer& tokenizer, const RenderedChat& chat) {
  const Encoding enc = tokenizer.EncodeWithOffsets(chat.text, {.add_special = false});
  TokenizedChat out;
  out.ids = enc.ids;
  out.is_response.assign(enc.ids.size(), 0);
  // Both lists are in text order, so one pass pairs them up.
  size_t span = 0;
  for (size_t i = 0; i < enc.ids.size(); ++i) {
    const auto [begin, end] = enc.offsets[i];
    while (span < chat.response_spans.size() && chat.response_spans[span].second <= begin) ++span;
    if (span < chat.response_spans.size() && begin < end &&
        begin < chat.response_spans[span].second && end > chat.response_spans[span].first) {
      out.is_response[i] = 1;
    }
  }
  return out;
}

}  // namespace diablo::model
