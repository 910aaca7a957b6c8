// Our ggml dequantisation equals the gguf package's (an independent
// implementation) on the real SmolLM2 tensors and on blocks quantised by gguf.
#include <cstring>
#include <random>

#include "formats/ggml_dequant.h"
#include "formats/gguf.h"
#include "tests/worker/model/reference_io.h"

namespace diablo::model {
namespace {

using testing::ReadArray;

void ExpectSame(const std::vector<float>& ours, const std::vector<float>& reference,
                const std::string& what) {
  ASSERT_EQ(ours.size(), reference.size()) << what;
  size_t mismatches = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    // Both compute d*q (+m) in fp32; allow one rounding of difference.
    if (std::abs(ours[i] - reference[i]) > 1e-6f * (1.0f + std::abs(reference[i]))) {
      if (++mismatches <= 5)
        ADD_FAILURE() << what << "[" << i << "]: " << ours[i] << " vs " << reference[i];
    }
  }
  EXPECT_EQ(mismatches, 0u) << what;
}

TEST(Dequantize, MatchesGgufPackageOnRealModelAndSyntheticBlocks) {
  if (!testing::HaveVenv() || !testing::HaveModel())
    GTEST_SKIP() << "needs the test venv and model";
  testing::TempDir dir;
  auto index =
      testing::RunReference(std::string("dequant --model ") + DIABLO_MODEL_GGUF, dir.path());
  ASSERT_FALSE(index.empty());

  GgufFile file = GgufFile::Open(DIABLO_MODEL_GGUF);
  int checked = 0;
  for (auto& [key, entry] : index.items()) {
    if (key.rfind("dequant_", 0) == 0) {
      const GgufTensorInfo* info = file.FindTensor(entry["tensor"].get<std::string>());
      ASSERT_NE(info, nullptr);
      std::vector<float> ours(info->elements());
      DequantizeToFloat(info->type, file.tensor_data(*info), info->elements(), ours);
      ExpectSame(ours, ReadArray<float>(dir.path(), key), key);
      ++checked;
    } else if (key.rfind("synthetic_", 0) == 0) {
      const std::string kind = key.substr(10);
      const GgmlType type = kind == "Q4_0"   ? GgmlType::kQ4_0
                            : kind == "Q4_1" ? GgmlType::kQ4_1
                            : kind == "Q8_0" ? GgmlType::kQ8_0
                            : kind == "F16"  ? GgmlType::kF16
                                             : GgmlType::kBF16;
      auto packed = testing::ReadBytes(dir.path() + "/packed_" + kind + ".raw");
      std::vector<float> ours(256);
      DequantizeToFloat(type, packed, 256, ours);
      ExpectSame(ours, ReadArray<float>(dir.path(), key), key);
      ++checked;
    }
  }
  // The model has F32, Q4_1 and Q8_0; the synthetic set adds Q4_0, F16, BF16.
  EXPECT_GE(checked, 7);
}

TEST(Dequantize, RefusesMismatchedSizesAndUnsupportedTypes) {
  std::vector<uint8_t> bytes(20);
  std::vector<float> out(32);
  EXPECT_THROW(DequantizeToFloat(GgmlType::kQ4_1, std::span(bytes).first(19), 32, out),
               FormatError);
  EXPECT_THROW(DequantizeToFloat(GgmlType::kQ4_K, bytes, 32, out), FormatError);
  EXPECT_NO_THROW(DequantizeToFloat(GgmlType::kQ4_1, bytes, 32, out));
}

// The block formulas written out value by value, the way ggml's reference
// decoders state them, as the reference for whichever decoder this CPU runs
// (the AVX2 one where it can).
float Reference(GgmlType type, const uint8_t* block, int j) {
  uint16_t d_bits, m_bits;
  std::memcpy(&d_bits, block, 2);
  std::memcpy(&m_bits, block + 2, 2);
  const float d = HalfToFloat(d_bits);
  if (type == GgmlType::kQ8_0) return d * static_cast<float>(static_cast<int8_t>(block[2 + j]));
  const uint8_t byte = block[(type == GgmlType::kQ4_1 ? 4 : 2) + j % 16];
  const int q = j < 16 ? byte & 0x0f : byte >> 4;
  if (type == GgmlType::kQ4_0) return d * static_cast<float>(q - 8);
  return d * static_cast<float>(q) + HalfToFloat(m_bits);
}

TEST(Dequantize, BlockDecodersEqualTheFormulasBitForBit) {
  std::mt19937 rng(5);
  for (const GgmlType type : {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_1}) {
    const GgmlTypeInfo& info = TypeInfo(type);
    const int blocks = 67;  // not a multiple of any vector width
    std::vector<uint8_t> bytes(blocks * info.block_bytes);
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
    for (int b = 0; b < blocks; ++b) {
      // Finite scales of any sign and size, subnormals included.
      for (int k = 0; k < (type == GgmlType::kQ4_1 ? 2 : 1); ++k) {
        uint8_t* h = &bytes[b * info.block_bytes + 2 * k];
        if ((h[1] & 0x7c) == 0x7c) h[1] &= 0xbb;  // no inf / nan exponent
      }
    }
    std::vector<float> ours(blocks * 32);
    DequantizeToFloat(type, bytes, ours.size(), ours);
    for (int i = 0; i < blocks * 32; ++i) {
      const float expected = Reference(type, &bytes[i / 32 * info.block_bytes], i % 32);
      ASSERT_EQ(std::memcmp(&ours[i], &expected, 4), 0)
          << info.name << "[" << i << "]: " << ours[i] << " vs " << expected;
    }
  }
}

TEST(HalfFloat, ConvertsSpecialValuesExactly) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x0001), 5.960464477539063e-08f);  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
}

}  // namespace
}  // namespace diablo::model
