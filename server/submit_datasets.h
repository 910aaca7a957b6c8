// The datasets of a job at submit: each is checked line by line
// (server/dataset_check.h) with the model's tokenizer and chat template when
// the scheduler can load them (the trainer's own: data.template auto takes
// the model's, a name takes that family), else with the record rules alone;
// within the operator's bounds, and not again while the file, the
// tokenizer and the data settings stay the same (server/submit_checks.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/object_store.h"
#include "server/submit_checks.h"
#include "spec/train_config.h"

namespace diablo::server {

// An input of the job as the submit resolved it.
struct SubmitInput {
  std::string field;  // "model", "data.train", "data.eval"
  std::string value;  // as the user wrote it, for messages
  // A file or folder the scheduler reads (a shared path, or its copy of an
  // object); empty when there is none.
  std::filesystem::path local;
  // Names the content of a copy or object (empty for a shared path, which is
  // stamped from its files).
  std::string stamp;
  // A dataset in object storage, read in place in chunks.
  std::shared_ptr<ObjectStore> store;
  std::string key;
  int64_t size = 0;
};

// INVALID_ARGUMENT naming the field and line, or data.template when the
// trainer would refuse the template; UNAVAILABLE when storage fails or every
// check slot stays busy.  `cache_dir` is the scheduler's: never in a message.
// `tenant` takes the check slots (SubmitChecks::AcquireDatasetSlot).
absl::Status CheckSubmitDatasets(const train::DataConfig& data, const SubmitInput* model,
                                 const std::vector<const SubmitInput*>& datasets,
                                 const std::filesystem::path& cache_dir, const std::string& tenant,
                                 SubmitChecks& checks);

}  // namespace diablo::server
