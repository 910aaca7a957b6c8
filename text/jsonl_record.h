// Reading fields of one JSONL record with errors that name file and line;
// shared by the training data reader and the evaluation reader.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace diablo::train {

[[noreturn]] inline void LineError(const std::string& path, int64_t line,
                                   const std::string& problem) {
  throw std::invalid_argument(path + ":" + std::to_string(line) + ": " + problem);
}

// record[key] as a string; "" when absent or null and not required.
inline std::string StringField(const nlohmann::json& record, const char* key, bool required,
                               const std::string& path, int64_t line) {
  auto it = record.find(key);
  if (it == record.end() || it->is_null()) {
    if (required) LineError(path, line, std::string("missing field \"") + key + "\"");
    return "";
  }
  if (!it->is_string())
    LineError(path, line, std::string("field \"") + key + "\" must be a string");
  return it->get<std::string>();
}

}  // namespace diablo::train
