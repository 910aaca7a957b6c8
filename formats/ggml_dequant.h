// Dequantisation of ggml tensor data (as stored in GGUF files) to fp32.
// Plain C++ so that loaders, tests and fuzzers can use it without LibTorch.
#pragma once

#include <cstdint>
#include <span>

#include "formats/gguf.h"

namespace diablo::model {

// True for the types DequantizeToFloat handles: F32, F16, BF16, Q8_0, Q4_0, Q4_1.
bool CanDequantize(GgmlType type);

// Converts `elements` values of `type` from `data` into `out`.
// REQUIRES: CanDequantize(type); elements is a multiple of the type's block
// size; data holds exactly the bytes for `elements`; out holds `elements`.
// Throws FormatError when the sizes disagree.
void DequantizeToFloat(GgmlType type, std::span<const uint8_t> data, uint64_t elements,
                       std::span<float> out);

// IEEE half and bfloat16 to float (exact).
float HalfToFloat(uint16_t h);
float BFloat16ToFloat(uint16_t b);

}  // namespace diablo::model
