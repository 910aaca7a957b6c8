// Each function carries its own target attribute, so the file builds for the
// baseline x86-64 and the caller checks the CPU at run time.
#include "formats/ggml_dequant_avx2.h"

#include <cstring>

#include "formats/ggml_dequant.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DIABLO_HAVE_X86 1
#define DIABLO_AVX2 __attribute__((target("avx2")))
#endif

namespace diablo::model {

#ifdef DIABLO_HAVE_X86
namespace {

float Scale(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return HalfToFloat(h);
}

// The three formats differ in how a quant becomes a value.
enum class Format { kQ8_0, kQ4_0, kQ4_1 };

// y[0..8) from the low 8 bytes of `bytes`: d * q (Q8_0, signed bytes),
// d * (q - 8) (Q4_0) or d * q + m (Q4_1), as the scalar decoders round them.
template <Format kFormat>
DIABLO_AVX2 inline void Store8(float* y, __m128i bytes, __m256 d, __m256 m) {
  __m256i q;
  if constexpr (kFormat == Format::kQ8_0) {
    q = _mm256_cvtepi8_epi32(bytes);
  } else {
    q = _mm256_cvtepu8_epi32(bytes);
    if constexpr (kFormat == Format::kQ4_0) q = _mm256_sub_epi32(q, _mm256_set1_epi32(8));
  }
  __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(q), d);
  if constexpr (kFormat == Format::kQ4_1) v = _mm256_add_ps(v, m);
  _mm256_storeu_ps(y, v);
}

// The 4-bit formats: byte j holds value j (low nibble) and j + 16 (high).
template <Format kFormat>
DIABLO_AVX2 void DecodeNibbles(const uint8_t* p, uint64_t blocks, float* y) {
  constexpr bool kHasMin = kFormat == Format::kQ4_1;
  constexpr uint32_t kBlockBytes = kHasMin ? 20 : 18;
  const __m128i low4 = _mm_set1_epi8(0x0f);
  for (uint64_t b = 0; b < blocks; ++b, p += kBlockBytes, y += 32) {
    const __m256 d = _mm256_set1_ps(Scale(p));
    const __m256 m = _mm256_set1_ps(kHasMin ? Scale(p + 2) : 0.0f);
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + (kHasMin ? 4 : 2)));
    const __m128i lo = _mm_and_si128(q, low4);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
    Store8<kFormat>(y, lo, d, m);
    Store8<kFormat>(y + 8, _mm_srli_si128(lo, 8), d, m);
    Store8<kFormat>(y + 16, hi, d, m);
    Store8<kFormat>(y + 24, _mm_srli_si128(hi, 8), d, m);
  }
}

DIABLO_AVX2 void DecodeQ8_0(const uint8_t* p, uint64_t blocks, float* y) {
  const __m256 unused = _mm256_setzero_ps();
  for (uint64_t b = 0; b < blocks; ++b, p += 34, y += 32) {
    const __m256 d = _mm256_set1_ps(Scale(p));
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2));
    const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 18));
    Store8<Format::kQ8_0>(y, q0, d, unused);
    Store8<Format::kQ8_0>(y + 8, _mm_srli_si128(q0, 8), d, unused);
    Store8<Format::kQ8_0>(y + 16, q1, d, unused);
    Store8<Format::kQ8_0>(y + 24, _mm_srli_si128(q1, 8), d, unused);
  }
}

}  // namespace

bool HaveAvx2Decoders() {
  static const bool have = __builtin_cpu_supports("avx2");
  return have;
}

bool DecodeBlocksAvx2(GgmlType type, const uint8_t* p, uint64_t blocks, float* y) {
  switch (type) {
    case GgmlType::kQ8_0:
      DecodeQ8_0(p, blocks, y);
      return true;
    case GgmlType::kQ4_0:
      DecodeNibbles<Format::kQ4_0>(p, blocks, y);
      return true;
    case GgmlType::kQ4_1:
      DecodeNibbles<Format::kQ4_1>(p, blocks, y);
      return true;
    default:
      return false;
  }
}

#else  // not x86-64 with GCC or Clang: the scalar decoders only

bool HaveAvx2Decoders() { return false; }
bool DecodeBlocksAvx2(GgmlType, const uint8_t*, uint64_t, float*) { return false; }

#endif

}  // namespace diablo::model
