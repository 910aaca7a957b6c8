// The ways a job fine-tunes a model, named as training configs, the job API
// and `diablo estimate` spell them.  One enum for the trainer's config, the
// estimator and the scheduler's validation, so they cannot disagree.  Plain
// C++ (no LibTorch), like its users in common/ and worker/train's config.
#pragma once

#include <string>

namespace diablo {

enum class FineTuneMethod { kDiaBlo, kLoRA, kFull };

// "diablo" | "lora" | "full"
const char* FineTuneMethodName(FineTuneMethod method);

// The inverse; throws std::invalid_argument listing the accepted names.
FineTuneMethod ParseFineTuneMethod(const std::string& name);

}  // namespace diablo
