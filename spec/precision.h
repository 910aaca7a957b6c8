// How a job holds its frozen weights: their floating-point precision and
// whether a GGUF model's quantised blocks stay packed.  One pair of enums for
// the training config, the estimator and the scheduler's validation, so they
// cannot disagree.  Adapters (and full fine-tuning) always train in fp32.
#pragma once

#include <string>

namespace diablo {

enum class Precision { kFp32, kBf16, kFp16 };

// "fp32" | "bf16" | "fp16": the training config's spelling.
const char* PrecisionName(Precision precision);
// "float32" | "bfloat16" | "float16": LibTorch's and Hugging Face's spelling.
const char* PrecisionDtypeName(Precision precision);
// Either spelling; throws std::invalid_argument listing the accepted names.
Precision ParsePrecision(const std::string& name);

// kDense: every weight expanded to the precision at load.  kPacked: a GGUF
// model's Q4_0/Q4_1/Q8_0 weights stay in their blocks (as the file stores
// them) and are dequantised per use.
enum class BaseWeights { kDense, kPacked };

const char* BaseWeightsName(BaseWeights base_weights);  // "dense" | "packed"

}  // namespace diablo
