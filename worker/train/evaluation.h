// Evaluation of a model (with or without an adapter) on a JSONL file:
//   loss     mean cross-entropy on the target tokens, and perplexity
//   exact    generate an answer greedily; correct when it equals the
//            reference (first line, case and surrounding space ignored)
//   number   generate; correct when the final number equals the
//            reference's (GSM8K style: the reference's "#### 42" or its last number)
//   choice   score each of the record's "choices" by the log-likelihood of
//            its tokens after the prompt; correct when the best is "answer"
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "text/chat_template.h"
#include "text/dataset.h"
#include "text/tokenizer.h"
#include "worker/model/llama.h"

namespace diablo::train {

enum class EvalTask { kLoss, kExact, kNumber, kChoice };
EvalTask ParseEvalTask(const std::string& name);  // throws std::invalid_argument

// One record of a generation or choice evaluation.
struct EvalItem {
  int64_t line = 0;
  std::string prompt;     // rendered up to where the model answers
  std::string reference;  // "output", or the last assistant message
  std::vector<std::string> choices;
  int64_t answer = -1;  // index into choices
};

// Reads alpaca ("instruction", "input", "output") or chat ("messages", the
// last one the assistant's reply) records, plus "choices" and "answer"
// (index or text) for the choice task.  Throws std::invalid_argument
// "<path>:<line>: ..." for malformed records.
std::vector<EvalItem> LoadEvalItems(const std::string& path,
                                    const model::ChatTemplate& chat_template, bool with_choices);

struct EvalOptions {
  EvalTask task = EvalTask::kLoss;
  int64_t batch = 8;
  int64_t max_new_tokens = 64;
  int64_t limit = 0;  // first N records only; 0 = all
};

struct EvalOutcome {
  int64_t line = 0;
  std::string prompt, reference, prediction;
  bool correct = false;
};

struct EvalResult {
  EvalTask task = EvalTask::kLoss;
  int64_t examples = 0;
  double loss = 0, perplexity = 0;  // loss task
  int64_t label_tokens = 0;
  double accuracy = 0;  // the other tasks
  int64_t correct = 0;
  std::vector<EvalOutcome> outcomes;
};

// Runs one task.  `progress` (may be empty) is called with (done, total).
EvalResult Evaluate(model::LlamaForCausalLMImpl& model, const model::Tokenizer& tokenizer,
                    const model::ChatTemplate& chat_template, const std::string& path,
                    const DataConfig& data, const EvalOptions& options,
                    const std::function<void(int64_t, int64_t)>& progress);

// The answer comparisons, exposed for tests.
std::string NormalizeAnswer(
    const std::string& text);                      // first line, trimmed, lower-case, no final '.'
std::string FinalNumber(const std::string& text);  // "" when there is none; "1,234.50" → "1234.5"

}  // namespace diablo::train
