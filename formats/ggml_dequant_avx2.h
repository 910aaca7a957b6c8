// AVX2 decoders for the block formats the packed base rebuilds on every
// matmul (Q8_0, Q4_0, Q4_1).  They compute exactly what the scalar decoders
// in ggml_dequant.cc compute (one multiply and one add per value, no fused
// multiply-add), eight values per instruction.
#pragma once

#include <cstdint>

#include "formats/gguf.h"

namespace diablo::model {

// True when this CPU runs the AVX2 decoders.
bool HaveAvx2Decoders();

// Decodes `blocks` consecutive blocks of `type` (Q8_0, Q4_0 or Q4_1) from `p`
// into `y`.  REQUIRES: HaveAvx2Decoders().  Returns false, writing nothing,
// for any other type.
bool DecodeBlocksAvx2(GgmlType type, const uint8_t* p, uint64_t blocks, float* y);

}  // namespace diablo::model
