#include "spec/fine_tune_method.h"

#include <stdexcept>

namespace diablo {

const char* FineTuneMethodName(FineTuneMethod method) {
  switch (method) {
    case FineTuneMethod::kDiaBlo:
      return "diablo";
    case FineTuneMethod::kLoRA:
      return "lora";
    case FineTuneMethod::kFull:
      return "full";
  }
  return "unknown";
}

FineTuneMethod ParseFineTuneMethod(const std::string& name) {
  if (name == "diablo") return FineTuneMethod::kDiaBlo;
  if (name == "lora") return FineTuneMethod::kLoRA;
  if (name == "full") return FineTuneMethod::kFull;
  throw std::invalid_argument("unknown method '" + name +
                              "' (expected \"diablo\", \"lora\" or \"full\")");
}

}  // namespace diablo
