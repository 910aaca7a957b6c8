#include "worker/train/evaluation.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <stdexcept>

#include "text/jsonl_record.h"
#include "worker/model/generate.h"
#include "worker/train/loss.h"

namespace diablo::train {
namespace {

using nlohmann::json;

EvalResult EvaluateLoss(model::LlamaForCausalLMImpl& model, const model::Tokenizer& tokenizer,
                        const model::ChatTemplate& chat_template, const std::string& path,
                        const DataConfig& data, const EvalOptions& options,
                        const std::function<void(int64_t, int64_t)>& progress) {
  Dataset set = LoadDataset(path, data, tokenizer, chat_template);
  auto n = static_cast<int64_t>(set.examples.size());
  if (options.limit > 0) n = std::min(n, options.limit);
  const at::Device device = model.parameters().front().device();
  const int32_t pad = tokenizer.eos_id().value_or(0);
  double loss = 0;
  int64_t labels = 0;
  for (int64_t begin = 0; begin < n; begin += options.batch) {
    std::vector<int64_t> indices;
    for (int64_t i = begin; i < std::min(n, begin + options.batch); ++i) indices.push_back(i);
    loss += LossSum(model, Collate(set, indices, pad, device)).item<double>();
    labels += SumLabels(set, indices);
    if (progress) progress(indices.back() + 1, n);
  }
  EvalResult r;
  r.task = EvalTask::kLoss;
  r.examples = n;
  r.label_tokens = labels;
  r.loss = loss / static_cast<double>(labels);
  r.perplexity = std::exp(r.loss);
  return r;
}

// Sum of log p(option tokens | prompt) for every option of `item`.
std::vector<double> ScoreChoices(model::LlamaForCausalLMImpl& model,
                                 const model::Tokenizer& tokenizer, const EvalItem& item) {
  const at::Device device = model.parameters().front().device();
  std::vector<int32_t> prompt = tokenizer.Encode(item.prompt, /*add_special=*/false);
  std::vector<double> scores;
  for (const std::string& choice : item.choices) {
    std::vector<int32_t> option = tokenizer.Encode(choice, /*add_special=*/false);
    std::vector<int64_t> ids(prompt.begin(), prompt.end());
    ids.insert(ids.end(), option.begin(), option.end());
    at::Tensor input = at::tensor(ids, at::kLong).unsqueeze(0).to(device);
    at::Tensor hidden = model.forward_hidden(input)[0];
    const auto p = static_cast<int64_t>(prompt.size());
    const auto k = static_cast<int64_t>(option.size());
    at::Tensor logp = at::log_softmax(model.logits(hidden.slice(0, p - 1, p - 1 + k)), -1);
    at::Tensor targets = input[0].slice(0, p, p + k).unsqueeze(1);
    scores.push_back(logp.gather(1, targets).sum().item<double>());
  }
  return scores;
}

}  // namespace

EvalTask ParseEvalTask(const std::string& name) {
  if (name == "loss") return EvalTask::kLoss;
  if (name == "exact") return EvalTask::kExact;
  if (name == "number") return EvalTask::kNumber;
  if (name == "choice") return EvalTask::kChoice;
  throw std::invalid_argument("unknown task \"" + name + "\" (use loss, exact, number or choice)");
}

std::string NormalizeAnswer(const std::string& text) {
  std::string s = text.substr(0, text.find('\n'));
  auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  if (!s.empty() && s.back() == '.') s.pop_back();
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string FinalNumber(const std::string& text) {
  std::string scope = text;
  if (size_t mark = text.rfind("####"); mark != std::string::npos) scope = text.substr(mark + 4);
  static const std::regex number(R"(-?\d[\d,]*(\.\d+)?)");
  std::string last;
  for (auto it = std::sregex_iterator(scope.begin(), scope.end(), number);
       it != std::sregex_iterator(); ++it)
    last = it->str();
  if (last.empty()) return "";
  last.erase(std::remove(last.begin(), last.end(), ','), last.end());
  if (last.find('.') != std::string::npos) {
    while (last.back() == '0') last.pop_back();
    if (last.back() == '.') last.pop_back();
  }
  return last;
}

std::vector<EvalItem> LoadEvalItems(const std::string& path,
                                    const model::ChatTemplate& chat_template, bool with_choices) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument(path + ": cannot open the evaluation file");
  std::vector<EvalItem> items;
  std::string text;
  for (int64_t line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    json record = json::parse(text, nullptr, false);
    if (record.is_discarded() || !record.is_object()) LineError(path, line, "not a JSON object");
    EvalItem item;
    item.line = line;
    if (record.contains("messages")) {
      const json& m = record["messages"];
      std::vector<model::ChatMessage> chat;
      if (m.is_array())
        for (const json& msg : m)
          if (msg.is_object() && msg.value("role", json()).is_string() &&
              msg.value("content", json()).is_string())
            chat.push_back({msg["role"], msg["content"]});
      if (chat.size() != (m.is_array() ? m.size() : 1))
        LineError(path, line, "malformed \"messages\"");
      if (!chat.empty() && chat.back().role == "assistant") {
        item.reference = chat.back().content;
        chat.pop_back();
      }
      if (chat.empty()) LineError(path, line, "no prompt before the reply");
      item.prompt = chat_template.Render(chat, /*add_generation_prompt=*/true).text;
    } else if (record.contains("instruction")) {
      item.prompt = chat_template
                        .RenderInstruction(StringField(record, "instruction", true, path, line),
                                           StringField(record, "input", false, path, line), "")
                        .text;
      item.reference = StringField(record, "output", false, path, line);
    } else {
      LineError(path, line, "expected \"messages\" or \"instruction\"");
    }
    if (with_choices) {
      const json& choices = record.value("choices", json());
      if (!choices.is_array() || choices.size() < 2)
        LineError(path, line, "the choice task needs \"choices\": a list of at least two strings");
      for (const json& c : choices) {
        if (!c.is_string()) LineError(path, line, "\"choices\" must hold strings");
        item.choices.push_back(c);
      }
      const json answer =
          record.value("answer", json(item.reference.empty() ? json() : json(item.reference)));
      if (answer.is_number_integer()) {
        item.answer = answer.get<int64_t>();
      } else if (answer.is_string()) {
        auto it = std::find(item.choices.begin(), item.choices.end(), answer.get<std::string>());
        item.answer = it == item.choices.end() ? -1 : it - item.choices.begin();
      }
      if (item.answer < 0 || item.answer >= static_cast<int64_t>(item.choices.size()))
        LineError(path, line, "\"answer\" must be an index into \"choices\" or one of them");
      item.reference = item.choices[static_cast<size_t>(item.answer)];
    } else if (item.reference.empty()) {
      LineError(path, line, "no reference answer (\"output\" or a final assistant message)");
    }
    items.push_back(std::move(item));
  }
  if (items.empty()) throw std::invalid_argument(path + ": no records");
  return items;
}

EvalResult Evaluate(model::LlamaForCausalLMImpl& model, const model::Tokenizer& tokenizer,
                    const model::ChatTemplate& chat_template, const std::string& path,
                    const DataConfig& data, const EvalOptions& options,
                    const std::function<void(int64_t, int64_t)>& progress) {
  at::NoGradGuard no_grad;
  model.eval();
  if (options.task == EvalTask::kLoss)
    return EvaluateLoss(model, tokenizer, chat_template, path, data, options, progress);

  std::vector<EvalItem> items =
      LoadEvalItems(path, chat_template, options.task == EvalTask::kChoice);
  if (options.limit > 0 && static_cast<int64_t>(items.size()) > options.limit)
    items.resize(options.limit);
  EvalResult r;
  r.task = options.task;
  r.examples = static_cast<int64_t>(items.size());

  model::GenerationOptions generation;
  generation.max_new_tokens = options.max_new_tokens;
  generation.stop_ids = model::EndOfTurnIds(tokenizer);

  for (size_t begin = 0; begin < items.size(); begin += static_cast<size_t>(options.batch)) {
    const size_t end = std::min(items.size(), begin + static_cast<size_t>(options.batch));
    std::vector<std::string> predictions;
    if (options.task == EvalTask::kChoice) {
      for (size_t i = begin; i < end; ++i) {
        std::vector<double> scores = ScoreChoices(model, tokenizer, items[i]);
        predictions.push_back(items[i].choices[static_cast<size_t>(
            std::max_element(scores.begin(), scores.end()) - scores.begin())]);
      }
    } else {
      std::vector<std::vector<int64_t>> prompts;
      for (size_t i = begin; i < end; ++i) {
        std::vector<int32_t> ids = tokenizer.Encode(items[i].prompt, /*add_special=*/false);
        prompts.emplace_back(ids.begin(), ids.end());
      }
      for (const model::Generation& g : model::Generate(model, prompts, generation)) {
        std::vector<int32_t> ids(g.tokens.begin(), g.tokens.end());
        predictions.push_back(tokenizer.Decode(ids, /*skip_special=*/true));
      }
    }
    for (size_t i = begin; i < end; ++i) {
      const EvalItem& item = items[i];
      EvalOutcome o{item.line, item.prompt, item.reference, predictions[i - begin], false};
      switch (options.task) {
        case EvalTask::kExact:
          o.correct = NormalizeAnswer(o.prediction) == NormalizeAnswer(o.reference);
          break;
        case EvalTask::kNumber:
          o.correct = !FinalNumber(o.reference).empty() &&
                      FinalNumber(o.prediction) == FinalNumber(o.reference);
          break;
        case EvalTask::kChoice:
          o.correct = o.prediction == o.reference;
          break;
        case EvalTask::kLoss:
          break;
      }
      r.correct += o.correct;
      r.outcomes.push_back(std::move(o));
    }
    if (progress) progress(static_cast<int64_t>(end), r.examples);
  }
  r.accuracy = static_cast<double>(r.correct) / static_cast<double>(r.examples);
  return r;
}

}  // namespace diablo::train
