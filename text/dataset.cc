// JSONL → tokenised examples.  Rendering goes through the model's chat
// template (text/chat_template.h), which also says which bytes are
// the model's replies; the tokens overlapping those bytes are the targets.
#include "text/dataset.h"

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "text/jsonl_record.h"

namespace diablo::train {
namespace {

using nlohmann::json;

DataFormat DetectFormat(const json& record) {
  if (record.contains("messages")) return DataFormat::kChat;
  if (record.contains("instruction")) return DataFormat::kAlpaca;
  if (record.contains("text")) return DataFormat::kText;
  return DataFormat::kAuto;
}

// One line's fields, read and checked: the rules that need no tokenizer.
struct Record {
  std::string text;                          // text
  std::string instruction, input, output;    // alpaca
  std::vector<model::ChatMessage> messages;  // chat
};

// Parses one non-blank line.  `format` is the file's format so far (auto
// before the first record of an auto file), set from the first record.
Record ReadRecord(const std::string& text, const DataConfig& config, DataFormat& format,
                  const std::string& path, int64_t line) {
  json record = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (record.is_discarded()) LineError(path, line, "not valid JSON");
  if (!record.is_object()) LineError(path, line, "each line must be a JSON object");
  DataFormat found = DetectFormat(record);
  if (format == DataFormat::kAuto) {
    if (found == DataFormat::kAuto)
      LineError(
          path, line,
          "cannot tell the format: expected \"messages\" (chat), \"instruction\" + \"output\" "
          "(alpaca) or \"text\"");
    format = found;
  } else if (found != format) {
    LineError(
        path, line,
        std::string("expected a ") + DataFormatName(format) + " record" +
            (found == DataFormat::kAuto ? "" : std::string(", found ") + DataFormatName(found)));
  }
  Record r;
  switch (format) {
    case DataFormat::kText:
      r.text = StringField(record, "text", true, path, line);
      return r;
    case DataFormat::kAlpaca:
      r.instruction = StringField(record, "instruction", true, path, line);
      r.input = StringField(record, "input", false, path, line);
      r.output = StringField(record, "output", true, path, line);
      if (r.output.empty()) LineError(path, line, "field \"output\" is empty: nothing to learn");
      return r;
    case DataFormat::kChat: {
      const json& messages = record.at("messages");
      if (!messages.is_array() || messages.empty())
        LineError(path, line, "\"messages\" must be a non-empty list of {\"role\", \"content\"}");
      bool has_reply = false;
      for (size_t i = 0; i < messages.size(); ++i) {
        const json& m = messages[i];
        if (!m.is_object() || !m.contains("role") || !m.contains("content") ||
            !m["role"].is_string() || !m["content"].is_string())
          LineError(
              path, line,
              "messages[" + std::to_string(i) + "] must have string \"role\" and \"content\"");
        r.messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
        has_reply |= r.messages.back().role == "assistant";
      }
      if (!has_reply && !config.train_on_prompt)
        LineError(path, line, "no \"assistant\" message: nothing to learn");
      return r;
    }
    case DataFormat::kAuto:
      break;
  }
  LineError(path, line, "unknown format");
}

model::TokenizedChat Tokenize(const Record& record, DataFormat format,
                              const model::Tokenizer& tokenizer,
                              const model::ChatTemplate& chat_template, const std::string& path,
                              int64_t line) {
  switch (format) {
    case DataFormat::kText: {
      // Plain text is all target: the model learns to continue it and stop.
      model::TokenizedChat out;
      out.ids = tokenizer.Encode(record.text, /*add_special=*/true);
      if (auto eos = tokenizer.eos_id()) out.ids.push_back(*eos);
      out.is_response.assign(out.ids.size(), 1);
      return out;
    }
    case DataFormat::kAlpaca:
      return model::TokenizeChat(tokenizer, chat_template.RenderInstruction(
                                                record.instruction, record.input, record.output));
    case DataFormat::kChat:
      try {
        return model::TokenizeChat(
            tokenizer, chat_template.Render(record.messages, /*add_generation_prompt=*/false));
      } catch (const std::invalid_argument& e) {
        LineError(path, line, e.what());
      }
    case DataFormat::kAuto:
      break;
  }
  LineError(path, line, "unknown format");
}

// Reads every non-blank line of `in` as LoadDataset does: the record's rules
// always; with a tokenizer, its example, truncated, each usable one handed
// to `keep` (when given).
DatasetScan Scan(std::istream& in, const std::string& path, const DataConfig& config,
                 const model::Tokenizer* tokenizer, const model::ChatTemplate* chat_template,
                 const std::function<void(Example&&)>& keep) {
  DatasetScan scan;
  scan.format = config.format;
  std::string text;
  for (int64_t line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    ++scan.stats.lines;
    const Record record = ReadRecord(text, config, scan.format, path, line);
    if (tokenizer == nullptr) continue;
    model::TokenizedChat tokens =
        Tokenize(record, scan.format, *tokenizer, *chat_template, path, line);
    Example e{std::move(tokens.ids), std::move(tokens.is_response)};
    if (config.train_on_prompt) e.target.assign(e.ids.size(), 1);
    const auto size = static_cast<int64_t>(e.ids.size());
    if (scan.shortest_tokens < 0 || size < scan.shortest_tokens) scan.shortest_tokens = size;
    bool cut = false;
    if (size > config.max_seq_len) {
      if (config.truncation == Truncation::kDrop) {
        ++scan.stats.dropped;
        continue;
      }
      e.ids.resize(config.max_seq_len);
      e.target.resize(config.max_seq_len);
      cut = true;
    }
    if (e.label_count() == 0) {  // e.g. the reply was cut off entirely
      ++scan.stats.dropped;
      continue;
    }
    scan.stats.truncated += cut;
    ++scan.stats.examples;
    scan.stats.tokens += static_cast<int64_t>(e.ids.size());
    scan.stats.label_tokens += e.label_count();
    if (keep) keep(std::move(e));
  }
  if (in.bad()) throw std::invalid_argument(path + ": read error");
  return scan;
}

// Concatenates examples into sequences of at most max_seq_len tokens, in
// order, each example whole (examples in one sequence can attend to the
// earlier ones: classic packing without document masks).
std::vector<Example> Pack(std::vector<Example> examples, int64_t max_seq_len) {
  std::vector<Example> packed;
  Example current;
  for (Example& e : examples) {
    if (!current.ids.empty() &&
        static_cast<int64_t>(current.ids.size() + e.ids.size()) > max_seq_len) {
      packed.push_back(std::move(current));
      current = Example{};
    }
    current.ids.insert(current.ids.end(), e.ids.begin(), e.ids.end());
    current.target.insert(current.target.end(), e.target.begin(), e.target.end());
  }
  if (!current.ids.empty()) packed.push_back(std::move(current));
  return packed;
}

}  // namespace

int64_t Example::label_count() const {
  int64_t n = 0;
  for (size_t t = 1; t < target.size(); ++t) n += target[t];
  return n;
}

const char* DataFormatName(DataFormat format) {
  switch (format) {
    case DataFormat::kAuto:
      return "auto";
    case DataFormat::kAlpaca:
      return "alpaca";
    case DataFormat::kChat:
      return "chat";
    case DataFormat::kText:
      return "text";
  }
  return "?";
}

Dataset LoadDataset(const std::string& path, const DataConfig& config,
                    const model::Tokenizer& tokenizer, const model::ChatTemplate& chat_template) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument(path + ": cannot open the dataset file");
  std::vector<Example> examples;
  const DatasetScan scan = Scan(in, path, config, &tokenizer, &chat_template,
                                [&](Example&& e) { examples.push_back(std::move(e)); });
  Dataset data;
  data.format = scan.format;
  data.stats.lines = scan.stats.lines;
  data.stats.truncated = scan.stats.truncated;
  data.stats.dropped = scan.stats.dropped;
  if (examples.empty())
    throw std::invalid_argument(
        path + ": no usable example (" + std::to_string(data.stats.lines) + " lines, " +
        std::to_string(data.stats.dropped) +
        " dropped as too long or without a response; raise data.max_seq_len?)");
  data.examples =
      config.packing ? Pack(std::move(examples), config.max_seq_len) : std::move(examples);
  data.stats.examples = static_cast<int64_t>(data.examples.size());
  for (const Example& e : data.examples) {
    data.stats.tokens += static_cast<int64_t>(e.ids.size());
    data.stats.label_tokens += e.label_count();
  }
  return data;
}

DatasetScan ScanDataset(std::istream& in, const std::string& name, const DataConfig& config,
                        const model::Tokenizer& tokenizer,
                        const model::ChatTemplate& chat_template) {
  return Scan(in, name, config, &tokenizer, &chat_template, nullptr);
}

DatasetScan ScanRecords(std::istream& in, const std::string& name, const DataConfig& config) {
  return Scan(in, name, config, nullptr, nullptr, nullptr);
}

}  // namespace diablo::train
