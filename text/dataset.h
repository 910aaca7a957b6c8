// Training data: JSONL files in the formats users have (Alpaca, chat
// messages, plain text) turned into token ids with a per-token flag saying
// which tokens the loss learns from (the responses; prompts are masked).
// Every line is checked before training starts: a malformed line is an
// error naming the file and line.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include "spec/train_config.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace diablo::train {

struct Example {
  std::vector<int32_t> ids;
  // target[t] == 1: the loss predicts ids[t] from the positions before it.
  std::vector<uint8_t> target;
  int64_t label_count() const;  // targets at t >= 1 (token 0 has no context)
};

struct DatasetStats {
  int64_t lines = 0;      // non-blank JSONL lines
  int64_t examples = 0;   // sequences after truncation / packing
  int64_t truncated = 0;  // examples cut at max_seq_len
  int64_t dropped = 0;    // examples skipped (too long with truncation: drop, or no target left)
  int64_t tokens = 0;
  int64_t label_tokens = 0;
};

struct Dataset {
  std::vector<Example> examples;
  DatasetStats stats;
  DataFormat format = DataFormat::kAuto;  // the format found
};

// One record of a file: exactly one format, decided from its keys when the
// config says auto ("messages" → chat, "instruction" → alpaca, "text" → text).
// Throws std::invalid_argument "<path>:<line>: <problem>" for unreadable
// files, invalid JSON, missing or mistyped fields, mixed formats, roles the
// template refuses, and a file with no usable example.
Dataset LoadDataset(const std::string& path, const DataConfig& config,
                    const model::Tokenizer& tokenizer, const model::ChatTemplate& chat_template);

const char* DataFormatName(DataFormat format);

// What LoadDataset finds in a file, without keeping the examples: for
// checking a whole file cheaply (the scheduler, at submit).
struct DatasetScan {
  // lines, truncated and dropped as LoadDataset counts them; examples, tokens
  // and label_tokens of the usable examples before packing.
  DatasetStats stats;
  DataFormat format = DataFormat::kAuto;  // the format found
  // Tokens of the shortest line's example before truncation; -1 when no
  // line was tokenized.
  int64_t shortest_tokens = -1;
};

// Reads every line of `in` with LoadDataset's rules, tokenizer and
// truncation, throwing the same std::invalid_argument "<name>:<line>:
// <problem>" (`name` stands for the path), but keeps nothing: memory does not
// grow with the file.  A file with no usable example is not an error here:
// stats.examples is 0 and the caller words it.
DatasetScan ScanDataset(std::istream& in, const std::string& name, const DataConfig& config,
                        const model::Tokenizer& tokenizer,
                        const model::ChatTemplate& chat_template);

// The rules that need no tokenizer: each non-blank line is a JSON object of
// one format (config.format, or the first line's) with its required fields
// and their types.  Throws as ScanDataset; counts stats.lines only.
DatasetScan ScanRecords(std::istream& in, const std::string& name, const DataConfig& config);

}  // namespace diablo::train
