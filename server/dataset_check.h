// The submit-time check of a JSONL dataset (data.train, data.eval): every
// line goes through the trainer's own reader (text/dataset.h), with the
// model's tokenizer and chat template when the scheduler has them (then
// max_seq_len and the truncation policy apply too, and a file none of whose
// examples is usable is refused), else through the record rules alone (JSON
// object, one format, required fields and their types).  The file is
// streamed in chunks: memory does not grow with it.
//
// Errors are INVALID_ARGUMENT naming the field and line as the user wrote
// them ("spec.data.train: line 5021: missing field \"output\""), never a path
// of the scheduler's; a storage failure while reading is UNAVAILABLE.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "spec/train_config.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace diablo::server {

// Where a dataset's bytes come from: `read(offset, length)` returns up to
// `length` bytes from `offset` (fewer only at the end), e.g. a local file or
// ObjectStore::ReadRange.  Its errors are shown to the user: they must not
// name the scheduler's paths.
struct DatasetBytes {
  std::function<absl::StatusOr<std::string>(int64_t offset, int64_t length)> read;
  int64_t size = 0;  // of the whole file
};
// A local file's bytes; FAILED_PRECONDITION when it cannot be opened.
absl::StatusOr<DatasetBytes> LocalDatasetBytes(const std::filesystem::path& path);

struct DatasetCheck {
  std::string field;  // "data.train" or "data.eval"
  // Null: the record rules only (no tokenizer to load).
  const model::Tokenizer* tokenizer = nullptr;
  const model::ChatTemplate* chat_template = nullptr;  // set with tokenizer
  // Bytes read at most; a larger file is checked in its first max_bytes
  // (whole lines) only, and is not refused for having no usable example.
  int64_t max_bytes = int64_t{64} << 20;
  int64_t chunk_bytes = int64_t{4} << 20;  // read at a time
};

absl::Status CheckDatasetLines(const DatasetCheck& check, const DatasetBytes& bytes,
                               const train::DataConfig& config);

}  // namespace diablo::server
