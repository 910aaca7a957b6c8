// GPU tests of packed GGUF weights on CUDA (kernels/cuda/ggml_dequant.cu via
// worker/model/packed_linear.h): the CUDA decoder gives the CPU decoders'
// values bit for bit, and PackedMatmul / PackedEmbedding on the GPU match the
// CPU results, whole and chunked, in fp32 and bf16.  Skipped without a GPU.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cstring>
#include <random>

#include "worker/model/packed_embedding.h"
#include "worker/model/packed_linear.h"

namespace diablo::model {
namespace {

// Random blocks with finite, realistic scales (and Q4_1 minimums).
PackedBlocks RandomBlocks(GgmlType type, int64_t out, int64_t in, uint32_t seed) {
  const GgmlTypeInfo& info = TypeInfo(type);
  const int64_t per_row = in / info.block_elements;
  at::Tensor data = at::empty({out, per_row * info.block_bytes}, at::kByte);
  std::mt19937 rng(seed);
  uint8_t* p = data.data_ptr<uint8_t>();
  for (int64_t b = 0; b < out * per_row; ++b, p += info.block_bytes) {
    for (uint32_t i = 0; i < info.block_bytes; ++i) p[i] = static_cast<uint8_t>(rng());
    for (int k = 0; k < (type == GgmlType::kQ4_1 ? 2 : 1); ++k) {
      const at::Tensor h =
          at::tensor({(k ? -0.05f : 0.01f) * (1 + static_cast<float>(rng() % 7))}).to(at::kHalf);
      std::memcpy(p + 2 * k, h.data_ptr(), 2);
    }
  }
  return {data, type, in, out};
}

PackedBlocks OnCuda(const PackedBlocks& b) { return {b.data.cuda(), b.type, b.in, b.out}; }

class PackedCudaTest : public ::testing::TestWithParam<GgmlType> {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) {
      GTEST_SKIP() << "no CUDA device: the CUDA decoder can only be checked on a GPU machine";
    }
    at::manual_seed(7);
    at::globalContext().setAllowTF32CuBLAS(false);
  }
};

TEST_P(PackedCudaTest, DecodesTheSameValuesAsTheCpu) {
  const PackedBlocks cpu = RandomBlocks(GetParam(), 77, 192, 1);
  const at::Tensor want = DequantizeBlocks(cpu, at::kFloat);
  const at::Tensor got = DequantizeBlocks(OnCuda(cpu), at::kFloat);
  ASSERT_TRUE(got.is_cuda());
  EXPECT_TRUE(at::equal(got.cpu(), want));
  // bf16 / fp16: the same values rounded once.
  EXPECT_TRUE(
      at::equal(DequantizeBlocks(OnCuda(cpu), at::kBFloat16).cpu(), want.to(at::kBFloat16)));
  EXPECT_TRUE(at::equal(DequantizeBlocks(OnCuda(cpu), at::kHalf).cpu(), want.to(at::kHalf)));
  const at::Tensor rows = at::tensor({76, 0, 5, 5}, at::kLong);
  EXPECT_TRUE(at::equal(DequantizeRows(OnCuda(cpu), rows.cuda(), at::kFloat).cpu(),
                        want.index_select(0, rows)));
}

TEST_P(PackedCudaTest, MatmulAndInputGradientMatchTheCpuWholeAndChunked) {
  const PackedBlocks cpu = RandomBlocks(GetParam(), 300, 256, 2);
  const PackedBlocks gpu = OnCuda(cpu);
  const int64_t saved = PackedChunkElements();
  for (const int64_t chunk : {saved, int64_t{64 * 256 + 3}}) {
    SetPackedChunkElements(chunk);
    at::Tensor x = at::randn({4, 9, 256}).requires_grad_(true);
    at::Tensor xg = x.detach().cuda().requires_grad_(true);
    at::Tensor y = PackedMatmul(x, cpu), yg = PackedMatmul(xg, gpu);
    const double scale = y.abs().max().item<double>();
    EXPECT_LT((yg.cpu() - y).abs().max().item<double>(), 1e-5 * scale) << "chunk " << chunk;
    const at::Tensor g = at::randn(y.sizes());
    (y * g).sum().backward();
    (yg * g.cuda()).sum().backward();
    const double gscale = x.grad().abs().max().item<double>();
    EXPECT_LT((xg.grad().cpu() - x.grad()).abs().max().item<double>(), 1e-5 * gscale);
    // bf16 activations: one rounding of inputs, weights and output.
    const at::Tensor xb = x.detach().to(at::kBFloat16);
    const at::Tensor yb = PackedMatmul(xb.cuda(), gpu).cpu().to(at::kFloat);
    EXPECT_LT((yb - y.detach()).abs().max().item<double>(), 3e-2 * scale);
  }
  SetPackedChunkElements(saved);
}

TEST_P(PackedCudaTest, EmbeddingLookupAndTiedHeadMatchTheCpu) {
  const PackedBlocks cpu = RandomBlocks(GetParam(), 500, 128, 3);
  PackedEmbedding on_cpu(cpu, at::kFloat), on_gpu(cpu, at::kFloat);
  on_gpu->to(at::Device(at::kCUDA, 0));
  const at::Tensor ids = at::tensor({3, 499, 0, 250, 3, 17}, at::kLong).view({2, 3});
  EXPECT_TRUE(at::equal(on_gpu->forward(ids.cuda()).cpu(), on_cpu->forward(ids)));
  const at::Tensor h = at::randn({5, 128});
  const at::Tensor want = on_cpu->project(h);
  EXPECT_LT((on_gpu->project(h.cuda()).cpu() - want).abs().max().item<double>(),
            1e-5 * want.abs().max().item<double>());
}

INSTANTIATE_TEST_SUITE_P(Types, PackedCudaTest,
                         ::testing::Values(GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0),
                         [](const auto& info) { return std::string(TypeInfo(info.param).name); });

}  // namespace
}  // namespace diablo::model
