// Scheduler: what a trainer's JSON-lines event (spec/trainer_events.h;
// docs/training.md, "Progress and events") does to its job — state,
// progress, checkpoints, log lines.
// The events come from another process: nothing in them is trusted to have
// the documented type (a NaN loss arrives as null), and none can crash the
// scheduler.
#include "spec/trainer_events.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "server/scheduler.h"

namespace diablo::server {
namespace {

using nlohmann::json;
namespace field = events::field;

// A number field; NaN/Inf (written as null) read as NaN, a missing or
// mistyped field as `fallback`.
double Number(const json& e, const char* key, double fallback = 0) {
  auto it = e.find(key);
  if (it == e.end()) return fallback;
  if (it->is_number()) return it->get<double>();
  if (it->is_null()) return std::numeric_limits<double>::quiet_NaN();
  return fallback;
}

int64_t Integer(const json& e, const char* key) {
  auto it = e.find(key);
  return it != e.end() && it->is_number() ? it->get<int64_t>() : 0;
}

std::string Text(const json& e, const char* key, const char* fallback = "") {
  auto it = e.find(key);
  return it != e.end() && it->is_string() ? it->get<std::string>() : fallback;
}

}  // namespace

absl::Status Scheduler::ApplyTrainerEvent(const std::string& job_id, int attempt, int64_t fence,
                                          const std::string& line) {
  json e = json::parse(line, nullptr, false);
  v1::JobEvent event;
  const std::optional<events::Kind> kind =
      e.is_object() ? events::ParseKind(Text(e, field::kEvent)) : std::nullopt;
  if (!kind) {  // not an event of the contract: kept as the trainer wrote it
    event.mutable_log()->set_source("trainer");
    event.mutable_log()->set_line(line);
    return AppendEvent(job_id, attempt, std::move(event));
  }
  event.set_time(Number(e, field::kTime));
  if (kind == events::Kind::kStarted) {
    const int64_t total = Integer(e, field::kTotalSteps), start = Integer(e, field::kStartStep);
    ASSIGN_OR_RETURN(Statement update,
                     db_->Prepare("UPDATE jobs SET total_steps = ? WHERE id = ? RETURNING state"));
    update.Bind(total).Bind(job_id);
    ASSIGN_OR_RETURN(bool row, update.Step());
    if (!row || update.Int(0) != v1::JOB_STATE_ASSIGNED) return absl::OkStatus();
    return SetState(
        job_id, v1::JOB_STATE_ASSIGNED, v1::JOB_STATE_RUNNING,
        absl::StrCat("attempt ", attempt, " training ", total, " steps",
                     start > 0 ? absl::StrCat(", resumed at step ", start) : std::string()));
  }
  if (kind == events::Kind::kStep) {
    v1::StepMetrics* m = event.mutable_step();
    m->set_step(Integer(e, field::kStep));
    m->set_total_steps(Integer(e, field::kTotalSteps));
    m->set_epoch(Number(e, field::kEpoch));
    m->set_loss(Number(e, field::kLoss));
    m->set_lr(Number(e, field::kLr));
    m->set_grad_norm(Number(e, field::kGradNorm));
    m->set_tokens_per_s(Number(e, field::kTokensPerS));
    m->set_eta_s(Number(e, field::kEtaS));
    ASSIGN_OR_RETURN(Statement update,
                     db_->Prepare("UPDATE jobs SET step = ?, total_steps = ?, loss = COALESCE(?, "
                                  "loss), tokens_per_s = ?, eta_s = ?, "
                                  "lr = ?, peak_rss_bytes = MAX(peak_rss_bytes, ?) WHERE id = ?"));
    // A non-finite loss cannot go into the row (SQLite keeps NaN as NULL):
    // the row keeps the last finite one; the event itself carries the NaN.
    update.Bind(m->step()).Bind(m->total_steps());
    if (std::isfinite(m->loss()))
      update.Bind(m->loss());
    else
      update.BindNull();
    RETURN_IF_ERROR(update.Bind(m->tokens_per_s())
                        .Bind(m->eta_s())
                        .Bind(m->lr())
                        .Bind(Integer(e, field::kPeakRssBytes))
                        .Bind(job_id)
                        .Run());
    return AppendEvent(job_id, attempt, std::move(event));
  }
  if (kind == events::Kind::kEval) {
    v1::EvalResult* r = event.mutable_eval();
    r->set_step(Integer(e, field::kStep));
    r->set_loss(Number(e, field::kLoss));
    r->set_perplexity(Number(e, field::kPerplexity));
    r->set_examples(Integer(e, field::kExamples));
    if (std::isfinite(r->loss())) {
      ASSIGN_OR_RETURN(Statement update,
                       db_->Prepare("UPDATE jobs SET eval_loss = ? WHERE id = ?"));
      RETURN_IF_ERROR(update.Bind(r->loss()).Bind(job_id).Run());
    }
    return AppendEvent(job_id, attempt, std::move(event));
  }
  if (kind == events::Kind::kCheckpoint && e.contains(field::kKey)) {
    // The agent adds `key` once every file of the checkpoint is in storage;
    // only then does `latest` name it, and only for the current attempt.
    const int64_t step = Integer(e, field::kStep);
    const std::string key = Text(e, field::kKey);
    RETURN_IF_ERROR(ValidateAttemptKey(key, job_id, attempt, "checkpoint key"));
    ASSIGN_OR_RETURN(
        Statement update,
        db_->Prepare("UPDATE jobs SET checkpoint_step = ?, checkpoint_key = ? WHERE id = ?"));
    RETURN_IF_ERROR(update.Bind(step).Bind(key).Bind(job_id).Run());
    json latest = {{"key", key}, {"step", step}, {"fence", fence}};
    RETURN_IF_ERROR(
        storage_->PutBytes(absl::StrCat("jobs/", job_id, "/checkpoints/latest"), latest.dump()));
    v1::CheckpointSaved* c = event.mutable_checkpoint();
    c->set_step(step);
    c->set_key(key);
    auto final_flag = e.find(field::kFinal);
    c->set_final(final_flag != e.end() && final_flag->is_boolean() && final_flag->get<bool>());
    return AppendEvent(job_id, attempt, std::move(event));
  }
  std::string text;
  if (kind == events::Kind::kError) {
    // Codes outside the contract count as `failed`: the metric's labels stay
    // the contract's few, whatever a trainer writes.
    const std::string code(events::ErrorCodeName(events::ParseErrorCode(Text(e, field::kCode))));
    ++trainer_errors_[code];
    text = absl::StrCat("error (", code, "): ", Text(e, field::kMessage));
  } else if (kind == events::Kind::kFinished) {
    text =
        absl::StrFormat("finished at step %d, loss %.4f, %.0f tokens/s", Integer(e, field::kStep),
                        Number(e, field::kLoss), Number(e, field::kTokensPerS));
  } else if (kind == events::Kind::kStopped) {
    text = absl::StrFormat("stopped at step %d of %d: %s", Integer(e, field::kStep),
                           Integer(e, field::kTotalSteps), Text(e, field::kMessage));
  } else {  // a checkpoint without a key: written, but not (yet) in storage
    text = line;
  }
  event.mutable_log()->set_source("trainer");
  event.mutable_log()->set_line(text);
  return AppendEvent(job_id, attempt, std::move(event));
}

}  // namespace diablo::server
