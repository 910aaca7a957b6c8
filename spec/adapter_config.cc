// Names and range checks for AdapterConfig, shared by injection, adapter files
// and the training config so every entry point rejects the same mistakes with
// the same words.
#include "spec/adapter_config.h"

#include <cmath>
#include <stdexcept>

namespace diablo::peft {

const char* LoRAInitName(LoRAInit init) {
  switch (init) {
    case LoRAInit::kDefault:
      return "default";
    case LoRAInit::kPiSSA:
      return "pissa";
    case LoRAInit::kMiLoRA:
      return "milora";
  }
  return "unknown";
}

LoRAInit ParseLoRAInit(const std::string& name) {
  if (name == "default") return LoRAInit::kDefault;
  if (name == "pissa") return LoRAInit::kPiSSA;
  if (name == "milora") return LoRAInit::kMiLoRA;
  throw std::invalid_argument("unknown LoRA init '" + name +
                              "' (expected \"default\", \"pissa\" or \"milora\")");
}

void ValidateAdapterConfig(const AdapterConfig& config) {
  auto fail = [](const std::string& message) {
    throw std::invalid_argument("adapter config: " + message);
  };
  if (config.method == Method::kFull) {
    fail("method full trains the whole model and has no adapter; use diablo or lora");
  }
  if (config.target_modules.empty()) {
    fail("target_modules is empty; name at least one layer, e.g. \"q_proj\"");
  }
  for (const std::string& target : config.target_modules) {
    if (target.empty() || target == "re:") {
      fail("target_modules contains an empty name or pattern");
    }
  }
  if (!(config.dropout >= 0.0 && config.dropout < 1.0)) {
    fail("dropout must be in [0, 1), got " + std::to_string(config.dropout));
  }
  if (config.method == Method::kDiaBlo && config.blocks <= 0) {
    fail("blocks must be a positive number of diagonal blocks, got " +
         std::to_string(config.blocks));
  }
  if (config.method == Method::kLoRA) {
    if (config.rank <= 0) fail("rank must be positive, got " + std::to_string(config.rank));
    if (!std::isfinite(config.alpha) || config.alpha <= 0.0) {
      fail("alpha must be a positive number, got " + std::to_string(config.alpha));
    }
  }
}

}  // namespace diablo::peft
