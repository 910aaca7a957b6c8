// `diablo eval`: loss / perplexity, generated-answer accuracy (exact or
// final number) and multiple-choice accuracy on a JSONL file, with or
// without an adapter.
#include <ATen/Parallel.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "text/chat_template.h"
#include "worker/cli/commands.h"
#include "worker/cli/model_session.h"
#include "worker/train/evaluation.h"

namespace diablo::cli {
namespace {

struct EvalFlags {
  ModelOptions model;
  std::string data;
  std::string task = "loss";
  std::string template_name = "auto";
  int64_t max_seq_len = 2048;
  train::EvalOptions options;
  int64_t show = 0;
  bool json = false;
  int threads = 0;
};

std::string OneLine(std::string s, size_t width) {
  for (char& c : s)
    if (c == '\n') c = ' ';
  return s.size() > width ? s.substr(0, width - 3) + "..." : s;
}

// Opens the model (and adapter) and scores the file, with a progress line on
// a terminal.
train::EvalResult RunEvaluation(EvalFlags& f) {
  if (f.threads > 0) at::set_num_threads(f.threads);
  f.options.task = train::ParseEvalTask(f.task);
  ModelSession session = OpenModel(f.model);
  model::ChatTemplate chat =
      f.template_name == "auto" ? model::ChatTemplate::ForModel(f.model.model, *session.tokenizer)
                                : model::ChatTemplate::FromName(
                                      f.template_name, model::TemplateTokensOf(*session.tokenizer));
  train::DataConfig data;
  data.max_seq_len = f.max_seq_len;
  const bool tty = isatty(STDERR_FILENO) && !f.json;
  auto progress = [tty](int64_t done, int64_t total) {
    if (tty)
      std::fprintf(stderr, "\r\033[Kevaluating %lld/%lld", static_cast<long long>(done),
                   static_cast<long long>(total));
  };
  train::EvalResult r = train::Evaluate(*session.loaded.model, *session.tokenizer, chat, f.data,
                                        data, f.options, progress);
  if (tty) std::fprintf(stderr, "\r\033[K");
  return r;
}

void PrintJson(const EvalFlags& f, const train::EvalResult& r) {
  nlohmann::json out{{"task", f.task}, {"examples", r.examples}, {"adapter", f.model.adapter}};
  if (r.task == train::EvalTask::kLoss) {
    out["loss"] = r.loss;
    out["perplexity"] = r.perplexity;
    out["label_tokens"] = r.label_tokens;
  } else {
    out["accuracy"] = r.accuracy;
    out["correct"] = r.correct;
    out["samples"] = nlohmann::json::array();
    for (int64_t i = 0; i < std::min<int64_t>(f.show, static_cast<int64_t>(r.outcomes.size()));
         ++i) {
      const auto& o = r.outcomes[static_cast<size_t>(i)];
      out["samples"].push_back({{"line", o.line},
                                {"prediction", o.prediction},
                                {"reference", o.reference},
                                {"correct", o.correct}});
    }
  }
  std::printf("%s\n", out.dump().c_str());
}

void PrintHuman(const EvalFlags& f, const train::EvalResult& r) {
  if (r.task == train::EvalTask::kLoss) {
    std::printf("loss %.4f  perplexity %.3f  (%lld records, %lld answer tokens)\n", r.loss,
                r.perplexity, static_cast<long long>(r.examples),
                static_cast<long long>(r.label_tokens));
    return;
  }
  for (int64_t i = 0; i < std::min<int64_t>(f.show, static_cast<int64_t>(r.outcomes.size())); ++i) {
    const auto& o = r.outcomes[static_cast<size_t>(i)];
    std::printf("[%s] line %lld\n  answer:    %s\n  reference: %s\n", o.correct ? "ok" : "wrong",
                static_cast<long long>(o.line), OneLine(o.prediction, 100).c_str(),
                OneLine(o.reference, 100).c_str());
  }
  std::printf("%s accuracy %.1f%%  (%lld of %lld)\n", f.task.c_str(), 100.0 * r.accuracy,
              static_cast<long long>(r.correct), static_cast<long long>(r.examples));
}

}  // namespace

Runner RegisterEval(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "eval",
      "Evaluate a model (and an adapter) on a JSONL file.\n"
      "Tasks: loss (mean cross-entropy on the answers, perplexity), exact (generate,\n"
      "compare the first line with the reference), number (generate, compare the final\n"
      "number: GSM8K style), choice (score each of \"choices\" by likelihood).\n\n"
      "Examples:\n"
      "  diablo eval --model M.gguf --data eval.jsonl --task loss\n"
      "  diablo eval --model M.gguf --adapter run/adapter --data eval.jsonl --task exact --show 3\n"
      "  diablo eval --model M.gguf --data gsm8k.jsonl --task number --max-new-tokens 256");
  auto f = std::make_shared<EvalFlags>();
  AddModelOptions(*cmd, f->model);
  cmd->add_option("--data", f->data,
                  "JSONL file (alpaca, chat; choice records add \"choices\" and \"answer\")")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--task", f->task, "loss, exact, number or choice")
      ->check(CLI::IsMember({"loss", "exact", "number", "choice"}))
      ->capture_default_str();
  cmd->add_option("--template", f->template_name,
                  "Chat template: auto (the model's), chatml, llama2, llama3, "
                  "mistral, alpaca")
      ->capture_default_str();
  cmd->add_option("--max-seq-len", f->max_seq_len, "Truncate records for the loss task")
      ->capture_default_str();
  cmd->add_option("--batch", f->options.batch, "Records per forward pass")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-new-tokens", f->options.max_new_tokens,
                  "Answer length limit for exact / number")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--limit", f->options.limit, "Evaluate the first N records only")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--show", f->show, "Print N examples with prediction and reference");
  cmd->add_flag("--json", f->json, "Print the result as one JSON object");
  cmd->add_option("--threads", f->threads, "CPU threads (default: LibTorch's)")
      ->check(CLI::NonNegativeNumber);
  return [f]() -> int {
    const train::EvalResult result = RunEvaluation(*f);
    if (f->json)
      PrintJson(*f, result);
    else
      PrintHuman(*f, result);
    return 0;
  };
}

}  // namespace diablo::cli
