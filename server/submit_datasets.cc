// Checking a job's datasets at submit: which reader, which tokenizer and
// template, the bounds, and the checks that passed.
#include "server/submit_datasets.h"

#include <optional>
#include <stdexcept>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "server/dataset_check.h"
#include "text/chat_template.h"

namespace diablo::server {
namespace {

namespace fs = std::filesystem;

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

// "pass --template" (the trainer's command-line advice) as a job spec says it.
std::string AsSpecAdvice(const std::string& text) {
  return absl::StrReplaceAll(text,
                             {{"pass --template with one of:", "set data.template to one of:"},
                              {"pass --template ", "set data.template: "}});
}

// What the trainer will render the datasets with: the model's own template
// (data.template: auto) or the one named.  INVALID_ARGUMENT naming
// data.template when the trainer would refuse it.
absl::StatusOr<std::optional<model::ChatTemplate>> TemplateFor(
    const train::DataConfig& data, const ModelTokenizers::Loaded& loaded, const SubmitInput& model,
    const fs::path& cache_dir) {
  if (data.chat_template != "auto") {
    try {
      return model::ChatTemplate::FromName(data.chat_template,
                                           model::TemplateTokensOf(*loaded.tokenizer));
    } catch (const std::exception& e) {
      return Invalid("spec.data.template", e.what());
    }
  }
  if (loaded.chat_template) return loaded.chat_template;
  // The reader names the file it read: the user's path, or the scheduler's
  // copy, which the user knows by the value they wrote.
  std::string why =
      absl::StrReplaceAll(loaded.template_error, {{model.local.string(), model.value}});
  if (absl::StrContains(why, cache_dir.string()))
    why = absl::StrCat(model.value, ": no chat template this version recognises");
  const std::string advice = AsSpecAdvice(why);
  return Invalid(
      "spec.data.template",
      absl::StrCat(
          "auto uses the model's own chat template, which the trainer cannot use: ", advice,
          absl::StrContains(advice, "data.template")
              ? ""
              : "; set data.template to one of chatml, llama2, llama3, mistral, alpaca"));
}

// Names a dataset check's outcome: the file's content and every setting
// that changes it.
std::string PassKey(const SubmitInput& data, const std::string& tokenizer_key,
                    const train::DataConfig& config, int64_t check_bytes) {
  std::string content = data.stamp;
  if (content.empty()) {  // a local path: its size and modification time
    std::error_code ec;
    content = absl::StrCat("file:", data.local.string(), ":", fs::file_size(data.local, ec), "@",
                           fs::last_write_time(data.local, ec).time_since_epoch().count());
  }
  return Sha256Hex(absl::StrCat(content, "\n", tokenizer_key, "\n", config.chat_template, "\n",
                                static_cast<int>(config.format), ":", config.max_seq_len, ":",
                                static_cast<int>(config.truncation), ":", config.train_on_prompt,
                                ":", check_bytes));
}

}  // namespace

absl::Status CheckSubmitDatasets(const train::DataConfig& data, const SubmitInput* model,
                                 const std::vector<const SubmitInput*>& datasets,
                                 const fs::path& cache_dir, const std::string& tenant,
                                 SubmitChecks& checks) {
  if (data.chat_template != "auto") {  // an unknown name fails the trainer
    try {
      model::ChatTemplate::FromName(data.chat_template, {});
    } catch (const std::exception& e) {
      return Invalid("spec.data.template", e.what());
    }
  }
  const SubmitCheckOptions& options = checks.options();
  if (options.dataset_check_bytes == 0) return absl::OkStatus();
  std::shared_ptr<const ModelTokenizers::Loaded> loaded;
  std::optional<model::ChatTemplate> chat;
  if (model != nullptr && !model->local.empty()) {
    loaded = checks.tokenizers().Get(model->local.string(), model->stamp);
    if (loaded->tokenizer != nullptr) {
      ASSIGN_OR_RETURN(chat, TemplateFor(data, *loaded, *model, cache_dir));
    }
  }
  const bool tokenized = loaded != nullptr && loaded->tokenizer != nullptr;
  for (const SubmitInput* dataset : datasets) {
    const std::string where = absl::StrCat("spec.", dataset->field);
    DatasetBytes bytes;
    if (dataset->store != nullptr) {
      bytes.size = dataset->size;
      bytes.read = [store = dataset->store, key = dataset->key, where](
                       int64_t offset, int64_t length) -> absl::StatusOr<std::string> {
        absl::StatusOr<std::string> got = store->ReadRange(key, offset, length);
        if (got.ok()) return got;
        NoteForOperator(absl::StrCat(where, ": ", got.status().message()));
        return absl::UnavailableError("storage did not answer");
      };
    } else if (!dataset->local.empty()) {
      absl::StatusOr<DatasetBytes> local = LocalDatasetBytes(dataset->local);
      if (!local.ok())
        return Invalid(where, absl::StrCat(dataset->value, ": ", local.status().message()));
      bytes = std::move(*local);
    } else {
      continue;  // a prefix, not a file: the trainer says so
    }
    const std::string key =
        PassKey(*dataset, tokenized ? loaded->key : "", data, options.dataset_check_bytes);
    if (checks.Passed(key)) continue;
    ASSIGN_OR_RETURN(SubmitChecks::Slot slot, checks.AcquireDatasetSlot(tenant));
    DatasetCheck check;
    check.field = dataset->field;
    if (tokenized) {
      check.tokenizer = loaded->tokenizer.get();
      check.chat_template = &*chat;
    }
    check.max_bytes = options.dataset_check_bytes;
    RETURN_IF_ERROR(CheckDatasetLines(check, bytes, data));
    checks.RecordPassed(key);
  }
  return absl::OkStatus();
}

}  // namespace diablo::server
