#include "spec/precision.h"

#include <stdexcept>

namespace diablo {

const char* PrecisionName(Precision precision) {
  switch (precision) {
    case Precision::kFp32:
      return "fp32";
    case Precision::kBf16:
      return "bf16";
    case Precision::kFp16:
      return "fp16";
  }
  return "?";
}

const char* PrecisionDtypeName(Precision precision) {
  switch (precision) {
    case Precision::kFp32:
      return "float32";
    case Precision::kBf16:
      return "bfloat16";
    case Precision::kFp16:
      return "float16";
  }
  return "?";
}

Precision ParsePrecision(const std::string& name) {
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kFp16})
    if (name == PrecisionName(p) || name == PrecisionDtypeName(p)) return p;
  throw std::invalid_argument("unknown precision '" + name +
                              "' (expected fp32, bf16 or fp16; float32, bfloat16 or float16 too)");
}

const char* BaseWeightsName(BaseWeights base_weights) {
  return base_weights == BaseWeights::kPacked ? "packed" : "dense";
}

}  // namespace diablo
