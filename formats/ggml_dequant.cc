// Block formats (ggml): each block covers 32 consecutive values of a row.
//   Q8_0: f16 scale d, 32 x int8 q            -> d * q
//   Q4_0: f16 scale d, 16 bytes of nibbles    -> d * (q - 8)
//   Q4_1: f16 scale d, f16 min m, 16 bytes    -> d * q + m
// In the 4-bit formats byte j holds value j in its low nibble and value j+16
// in its high nibble.
#include "formats/ggml_dequant.h"

#include <bit>
#include <cstring>
#include <string>

#include "formats/ggml_dequant_avx2.h"

namespace diablo::model {
namespace {

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

}  // namespace

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0x1f) {  // inf / nan
    bits = sign | 0x7f800000 | (mantissa << 13);
  } else if (exponent != 0) {  // normal
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // zero
    bits = sign;
  } else {  // subnormal: normalise the mantissa
    exponent = 113;
    while ((mantissa & 0x400) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ff) << 13);
  }
  return std::bit_cast<float>(bits);
}

float BFloat16ToFloat(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

bool CanDequantize(GgmlType type) {
  switch (type) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
      return true;
    default:
      return false;
  }
}

void DequantizeToFloat(GgmlType type, std::span<const uint8_t> data, uint64_t elements,
                       std::span<float> out) {
  const GgmlTypeInfo& info = TypeInfo(type);
  if (!CanDequantize(type)) {
    throw FormatError(std::string("tensors of type ") + info.name +
                      " cannot be loaded by this version (supported: F32, F16, BF16, Q8_0, "
                      "Q4_0, Q4_1); re-quantise the model to one of these");
  }
  if (elements % info.block_elements != 0 ||
      data.size() != elements / info.block_elements * info.block_bytes || out.size() != elements) {
    throw FormatError(std::string("dequantize ") + info.name + ": sizes disagree (" +
                      std::to_string(data.size()) + " bytes for " + std::to_string(elements) +
                      " values)");
  }
  const uint8_t* p = data.data();
  float* y = out.data();
  const uint64_t blocks = elements / info.block_elements;
  // The packed base decodes every weight twice per micro-batch: vectorise the
  // block formats where the CPU can.
  if (HaveAvx2Decoders() && DecodeBlocksAvx2(type, p, blocks, y)) return;
  switch (type) {
    case GgmlType::kF32:
      std::memcpy(y, p, elements * 4);
      break;
    case GgmlType::kF16:
      for (uint64_t i = 0; i < elements; ++i) y[i] = HalfToFloat(LoadU16(p + 2 * i));
      break;
    case GgmlType::kBF16:
      for (uint64_t i = 0; i < elements; ++i) y[i] = BFloat16ToFloat(LoadU16(p + 2 * i));
      break;
    case GgmlType::kQ8_0:
      for (uint64_t b = 0; b < blocks; ++b, p += 34, y += 32) {
        const float d = HalfToFloat(LoadU16(p));
        const auto* q = reinterpret_cast<const int8_t*>(p + 2);
        for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(q[j]);
      }
      break;
    case GgmlType::kQ4_0:
      for (uint64_t b = 0; b < blocks; ++b, p += 18, y += 32) {
        const float d = HalfToFloat(LoadU16(p));
        const uint8_t* q = p + 2;
        for (int j = 0; j < 16; ++j) {
          y[j] = d * static_cast<float>((q[j] & 0x0f) - 8);
          y[j + 16] = d * static_cast<float>((q[j] >> 4) - 8);
        }
      }
      break;
    case GgmlType::kQ4_1:
      for (uint64_t b = 0; b < blocks; ++b, p += 20, y += 32) {
        const float d = HalfToFloat(LoadU16(p));
        const float m = HalfToFloat(LoadU16(p + 2));
        const uint8_t* q = p + 4;
        for (int j = 0; j < 16; ++j) {
          y[j] = d * static_cast<float>(q[j] & 0x0f) + m;
          y[j + 16] = d * static_cast<float>(q[j] >> 4) + m;
        }
      }
      break;
    default:
      break;  // unreachable: CanDequantize checked above
  }
}

}  // namespace diablo::model
