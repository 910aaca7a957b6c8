// JSON that a tenant wrote (dataset lines, tokenizer and model config files)
// is read by the scheduler at submit as well as by the trainer.  nlohmann's
// parser is iterative, but copying a value, destroying one in older
// releases, or walking it recursively is not: a file of 100,000 nested
// brackets would overflow the stack.  ParseBoundedJson refuses nesting
// deeper than kMaxJsonDepth while it parses, before any of that happens.
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

namespace diablo {

// Real files nest a handful of levels (tokenizer.json about 6).
inline constexpr int kMaxJsonDepth = 100;

struct JsonTooDeep : std::runtime_error {
  JsonTooDeep()
      : std::runtime_error("nested deeper than " + std::to_string(kMaxJsonDepth) + " levels") {}
};

// Throws JsonTooDeep, or nlohmann::json::exception for malformed text.
inline nlohmann::json ParseBoundedJson(std::string_view text) {
  nlohmann::json::parser_callback_t limit = [](int depth, nlohmann::json::parse_event_t,
                                               nlohmann::json&) {
    if (depth > kMaxJsonDepth) throw JsonTooDeep();
    return true;
  };
  return nlohmann::json::parse(text, limit);
}

}  // namespace diablo
