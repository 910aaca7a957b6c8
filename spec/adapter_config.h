// What an adapter is: method, targets and settings.  The same fields are
// written to adapter_config.json and read back (worker/peft/adapter_files.h),
// and the training config's `method` section maps onto this struct.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "spec/fine_tune_method.h"

namespace diablo::peft {

// The project's one method enum; an adapter is kDiaBlo or kLoRA, never kFull
// (ValidateAdapterConfig refuses it).
using Method = FineTuneMethod;
enum class LoRAInit { kDefault, kPiSSA, kMiLoRA };  // kDefault: Kaiming-uniform A, zero B

struct AdapterConfig {
  Method method = Method::kDiaBlo;
  // Module names or patterns.  A plain name ("q_proj") matches a module whose
  // last path component equals it; a pattern starting with "re:" is a
  // std::regex matched against the whole dotted path
  // ("re:model\\.layers\\.[0-3]\\..*_proj").
  std::vector<std::string> target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};
  double dropout = 0.0;    // on the adapter's input only
  std::string base_model;  // recorded for users; a path or a hub name

  // DiaBlo
  int64_t blocks = 64;  // requested N; each layer's N_eff may be smaller

  // LoRA
  int64_t rank = 8;
  double alpha = 16.0;  // scaling = alpha / rank
  LoRAInit init = LoRAInit::kDefault;
};

const char* LoRAInitName(LoRAInit init);  // "default" | "pissa" | "milora"
// The inverse of LoRAInitName (case-sensitive); throws std::invalid_argument
// listing the accepted names.
LoRAInit ParseLoRAInit(const std::string& name);

// Throws std::invalid_argument naming the first field that is out of range
// (blocks, rank, alpha, dropout, target_modules).  Regex syntax is checked
// where patterns are compiled, by InjectAdapters.
void ValidateAdapterConfig(const AdapterConfig& config);

}  // namespace diablo::peft
