// libFuzzer target for the job configuration (spec/train_config.h):
// what `diablo train` reads from a file and the scheduler from every
// CreateJob.  Any exception other than std::invalid_argument, any crash or
// sanitizer report is a bug; so is a config that parses but whose own JSON
// form (ConfigToJson) does not parse back to the same thing.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "spec/train_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return 0;
  diablo::train::TrainConfig config;
  try {
    config = diablo::train::ConfigFromJson(doc, "fuzz input");
  } catch (const std::invalid_argument&) {
    return 0;
  }
  const nlohmann::json canonical = diablo::train::ConfigToJson(config);
  try {
    const nlohmann::json again =
        diablo::train::ConfigToJson(diablo::train::ConfigFromJson(canonical, "round trip"));
    if (again != canonical) __builtin_trap();
  } catch (const std::invalid_argument&) {
    __builtin_trap();  // a config the parser accepted must survive its own JSON form
  }
  return 0;
}
