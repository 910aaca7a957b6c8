// PackedLinear and PackedEmbedding against a dense reference: the whole
// weight dequantised in one call of the ggml decoders and run through
// at::linear or a dense embedding, for the forward, the input gradient (whole
// and chunked), row lookups, and DiaBlo and LoRA adapters wrapped around each.
#include "worker/model/packed_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>

#include <cstring>
#include <optional>
#include <random>
#include <vector>

#include "formats/ggml_dequant.h"
#include "worker/model/packed_embedding.h"
#include "worker/peft/diablo_linear.h"
#include "worker/peft/inject.h"
#include "worker/peft/lora_linear.h"

namespace diablo::model {
namespace {

uint16_t HalfBits(float v) {
  at::Tensor h = at::tensor({v}).to(at::kHalf);
  uint16_t bits;
  std::memcpy(&bits, h.data_ptr(), 2);
  return bits;
}

// Random blocks of `type` for an [out, in] weight: random quants, and scales
// (and Q4_1 minimums) of a realistic size so the values stay O(0.1).
PackedBlocks RandomBlocks(GgmlType type, int64_t out, int64_t in, uint32_t seed) {
  const GgmlTypeInfo& info = TypeInfo(type);
  const int64_t blocks_per_row = in / info.block_elements;
  at::Tensor data = at::empty({out, blocks_per_row * info.block_bytes}, at::kByte);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.002f, 0.02f), minimum(-0.1f, 0.0f);
  uint8_t* p = data.data_ptr<uint8_t>();
  for (int64_t b = 0; b < out * blocks_per_row; ++b, p += info.block_bytes) {
    for (uint32_t i = 0; i < info.block_bytes; ++i) p[i] = static_cast<uint8_t>(byte(rng));
    const uint16_t d = HalfBits(scale(rng));
    std::memcpy(p, &d, 2);
    if (type == GgmlType::kQ4_1) {
      const uint16_t m = HalfBits(minimum(rng));
      std::memcpy(p + 2, &m, 2);
    }
  }
  return {data, type, in, out};
}

// The independent reference: one decoder call over all bytes.
at::Tensor DenseReference(const PackedBlocks& b) {
  at::Tensor w = at::empty({b.out, b.in}, at::kFloat);
  DequantizeToFloat(b.type, {b.data.data_ptr<uint8_t>(), static_cast<size_t>(b.data.numel())},
                    b.out * b.in, {w.data_ptr<float>(), static_cast<size_t>(w.numel())});
  return w;
}

class PackedLinearTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(PackedLinearTest, ForwardAndInputGradientMatchTheDequantisedDenseLayer) {
  const PackedBlocks blocks = RandomBlocks(GetParam(), 48, 96, 1);
  const at::Tensor w = DenseReference(blocks);
  at::manual_seed(0);
  const at::Tensor bias = at::randn({48});
  PackedLinear packed(blocks, bias);

  at::Tensor x = at::randn({2, 5, 96}).requires_grad_(true);
  at::Tensor x_ref = x.detach().clone().requires_grad_(true);
  at::Tensor y = packed->forward(x);
  at::Tensor y_ref = at::linear(x_ref, w, bias);
  EXPECT_TRUE(at::allclose(y, y_ref, 1e-5, 1e-5)) << (y - y_ref).abs().max().item<float>();

  const at::Tensor g = at::randn(y.sizes());
  (y * g).sum().backward();
  (y_ref * g).sum().backward();
  EXPECT_TRUE(at::allclose(x.grad(), x_ref.grad(), 1e-5, 1e-5));
  // Frozen: nothing of the layer takes part in training.
  for (const at::Tensor& p : packed->parameters()) {
    EXPECT_FALSE(p.requires_grad());
    EXPECT_FALSE(p.grad().defined());
  }
  EXPECT_FALSE(packed->packed().grad().defined());
  EXPECT_EQ(packed->packed().scalar_type(), at::kByte);
}

TEST_P(PackedLinearTest, DiaBloOnThePackedLayerTrainsLikeOnTheDenseLayer) {
  const PackedBlocks blocks = RandomBlocks(GetParam(), 40, 64, 2);
  const at::Tensor w = DenseReference(blocks);
  peft::DiaBloLinear on_packed(PackedLinear(blocks, at::Tensor()).ptr(), /*blocks=*/3);
  peft::DiaBloLinear on_dense(w, at::Tensor(), /*blocks=*/3);
  ASSERT_EQ(on_packed->block_A().sizes(), on_dense->block_A().sizes());
  at::manual_seed(3);
  {
    at::NoGradGuard no_grad;
    const at::Tensor a = at::randn(on_dense->block_A().sizes()) * 0.1;
    on_packed->block_A().copy_(a);
    on_dense->block_A().copy_(a);
  }
  const at::Tensor x = at::randn({3, 7, 64});
  at::Tensor xp = x.clone().requires_grad_(true), xd = x.clone().requires_grad_(true);
  at::Tensor yp = on_packed->forward(xp), yd = on_dense->forward(xd);
  EXPECT_TRUE(at::allclose(yp, yd, 1e-5, 1e-5));
  const at::Tensor g = at::randn(yp.sizes());
  (yp * g).sum().backward();
  (yd * g).sum().backward();
  EXPECT_TRUE(at::allclose(on_packed->block_A().grad(), on_dense->block_A().grad(), 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(xp.grad(), xd.grad(), 1e-5, 1e-5));
  // The only trainable tensor is the adapter.
  int trainable = 0;
  for (const at::Tensor& p : on_packed->parameters()) trainable += p.requires_grad();
  EXPECT_EQ(trainable, 1);
}

TEST_P(PackedLinearTest, LoRAOnThePackedLayerTrainsLikeOnTheDenseLayer) {
  const PackedBlocks blocks = RandomBlocks(GetParam(), 40, 64, 9);
  at::manual_seed(4);
  peft::LoRALinear on_packed(PackedLinear(blocks, at::Tensor()).ptr(), /*rank=*/4, /*alpha=*/8.0);
  peft::LoRALinear on_dense(DenseReference(blocks), at::Tensor(), 4, 8.0);
  {
    at::NoGradGuard no_grad;
    on_dense->lora_A().copy_(on_packed->lora_A());
    on_packed->lora_B().normal_(0, 0.1);
    on_dense->lora_B().copy_(on_packed->lora_B());
  }
  const at::Tensor x = at::randn({2, 5, 64});
  at::Tensor xp = x.clone().requires_grad_(true), xd = x.clone().requires_grad_(true);
  at::Tensor yp = on_packed->forward(xp), yd = on_dense->forward(xd);
  EXPECT_TRUE(at::allclose(yp, yd, 1e-5, 1e-5));
  const at::Tensor g = at::randn(yp.sizes());
  (yp * g).sum().backward();
  (yd * g).sum().backward();
  EXPECT_TRUE(at::allclose(on_packed->lora_A().grad(), on_dense->lora_A().grad(), 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(on_packed->lora_B().grad(), on_dense->lora_B().grad(), 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(xp.grad(), xd.grad(), 1e-5, 1e-5));
  EXPECT_THROW(on_packed->merge(), std::logic_error);
}

INSTANTIATE_TEST_SUITE_P(Types, PackedLinearTest,
                         ::testing::Values(GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ8_0),
                         [](const auto& info) { return std::string(TypeInfo(info.param).name); });

TEST(PackedLinear, Bf16ActivationsUseABf16Weight) {
  const PackedBlocks blocks = RandomBlocks(GgmlType::kQ4_1, 32, 64, 4);
  PackedLinear packed(blocks, at::Tensor());
  const at::Tensor x = at::randn({4, 64}).to(at::kBFloat16);
  const at::Tensor y = packed->forward(x);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  const at::Tensor ref = at::linear(x, DenseReference(blocks).to(at::kBFloat16));
  EXPECT_TRUE(at::allclose(y.to(at::kFloat), ref.to(at::kFloat), 1e-2, 1e-2));
}

// Lowers the chunk size for one test, so a small weight is rebuilt a few rows
// at a time like a large one, and restores it afterwards.
class SmallChunks {
 public:
  explicit SmallChunks(int64_t elements) : saved_(PackedChunkElements()) {
    SetPackedChunkElements(elements);
  }
  ~SmallChunks() { SetPackedChunkElements(saved_); }

 private:
  int64_t saved_;
};

TEST_P(PackedLinearTest, ChunkedRebuildMatchesTheWholeWeightInBothDirections) {
  // 5 rows of 64 per chunk: chunks of 5, 5, ... and a last one of 2 rows.
  const SmallChunks chunks(5 * 64 + 7);
  const PackedBlocks blocks = RandomBlocks(GetParam(), 37, 64, 11);
  const at::Tensor w = DenseReference(blocks);
  at::manual_seed(12);
  const at::Tensor bias = at::randn({37});
  for (const bool with_bias : {false, true}) {
    at::Tensor x = at::randn({3, 4, 64}).requires_grad_(true);
    at::Tensor x_ref = x.detach().clone().requires_grad_(true);
    const std::optional<at::Tensor> b = with_bias ? std::optional<at::Tensor>(bias) : std::nullopt;
    at::Tensor y = PackedMatmul(x, blocks, b);
    at::Tensor y_ref = at::linear(x_ref, w, with_bias ? bias : at::Tensor());
    ASSERT_EQ(y.sizes(), y_ref.sizes());
    EXPECT_TRUE(at::allclose(y, y_ref, 1e-5, 1e-5)) << (y - y_ref).abs().max().item<float>();
    const at::Tensor g = at::randn(y.sizes());
    (y * g).sum().backward();
    (y_ref * g).sum().backward();
    EXPECT_TRUE(at::allclose(x.grad(), x_ref.grad(), 1e-5, 1e-5))
        << (x.grad() - x_ref.grad()).abs().max().item<float>();
  }
}

TEST(PackedLinear, ChunkedBf16MatchesTheBf16Weight) {
  const SmallChunks chunks(8 * 64);
  const PackedBlocks blocks = RandomBlocks(GgmlType::kQ4_0, 20, 64, 13);
  const at::Tensor x = at::randn({6, 64}).to(at::kBFloat16);
  const at::Tensor y = PackedMatmul(x, blocks);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  const at::Tensor ref = at::linear(x, DenseReference(blocks).to(at::kBFloat16));
  EXPECT_TRUE(at::allclose(y.to(at::kFloat), ref.to(at::kFloat), 1e-2, 1e-2));
}

TEST(PackedLinear, ARowLookupDecodesExactlyTheRowsAskedFor) {
  const PackedBlocks blocks = RandomBlocks(GgmlType::kQ8_0, 50, 96, 14);
  const at::Tensor w = DenseReference(blocks);
  const at::Tensor ids = at::tensor({3, 49, 0, 3, 17, 8}, at::kLong).view({2, 3});
  const at::Tensor rows = DequantizeRows(blocks, ids, at::kFloat);
  ASSERT_EQ(rows.sizes(), (std::vector<int64_t>{2, 3, 96}));
  EXPECT_TRUE(at::equal(rows, w.index_select(0, ids.view({-1})).view({2, 3, 96})));
  EXPECT_THROW(DequantizeRows(blocks, at::tensor({50}, at::kLong), at::kFloat), c10::Error);
}

TEST(PackedEmbedding, LookupAndTiedHeadMatchADenseTable) {
  const PackedBlocks blocks = RandomBlocks(GgmlType::kQ4_1, 40, 64, 15);
  const at::Tensor table = DenseReference(blocks);
  PackedEmbedding packed(blocks, at::kFloat);
  torch::nn::Embedding dense(torch::nn::EmbeddingOptions(40, 64)._weight(table));
  const at::Tensor ids = at::tensor({1, 39, 7, 7, 0, 22}, at::kLong).view({2, 3});
  EXPECT_TRUE(at::equal(packed->forward(ids), dense->forward(ids)));
  // The head in chunks, as the trainer's LM head runs on a large vocabulary.
  const SmallChunks chunks(9 * 64);
  at::Tensor h = at::randn({2, 3, 64}).requires_grad_(true);
  at::Tensor h_ref = h.detach().clone().requires_grad_(true);
  at::Tensor logits = packed->project(h), logits_ref = at::linear(h_ref, table);
  EXPECT_TRUE(at::allclose(logits, logits_ref, 1e-5, 1e-5));
  logits.logsumexp(-1).sum().backward();
  logits_ref.logsumexp(-1).sum().backward();
  EXPECT_TRUE(at::allclose(h.grad(), h_ref.grad(), 1e-5, 1e-5));
  // Frozen, and held only as blocks.
  EXPECT_TRUE(packed->parameters().empty());
  EXPECT_EQ(packed->packed().scalar_type(), at::kByte);
  EXPECT_EQ(PackedWeightElements(*packed), 40 * 64);
  packed->to(at::kBFloat16);
  EXPECT_EQ(packed->forward(ids).scalar_type(), at::kBFloat16);
  EXPECT_EQ(packed->packed().scalar_type(), at::kByte);
}

TEST(PackedEmbedding, RefusesATableThatCannotStayPacked) {
  PackedBlocks f16 = RandomBlocks(GgmlType::kQ8_0, 8, 64, 16);
  f16.type = GgmlType::kF16;
  EXPECT_THROW(PackedEmbedding(f16, at::kFloat), std::invalid_argument);
  EXPECT_THROW(PackedEmbedding(RandomBlocks(GgmlType::kQ8_0, 8, 64, 16), at::kLong),
               std::invalid_argument);
}

TEST(PackedLinear, CastingTheModelKeepsTheBlocksPacked) {
  PackedLinear packed(RandomBlocks(GgmlType::kQ8_0, 32, 64, 5), at::zeros({32}));
  packed->to(at::kBFloat16);
  EXPECT_EQ(packed->packed().scalar_type(), at::kByte);
  EXPECT_EQ(packed->bias().scalar_type(), at::kBFloat16);
}

TEST(PackedLinear, RefusesBlocksThatDoNotFitTheShape) {
  PackedBlocks b = RandomBlocks(GgmlType::kQ4_0, 8, 64, 6);
  b.in = 96;
  EXPECT_THROW(PackedLinear(b, at::Tensor()), std::invalid_argument);
  PackedBlocks f32 = RandomBlocks(GgmlType::kQ4_0, 8, 64, 6);
  f32.type = GgmlType::kF32;
  EXPECT_THROW(PackedLinear(f32, at::Tensor()), std::invalid_argument);
}

TEST(PackedLinear, MergingIntoAPackedBaseIsRefusedWithAReason) {
  peft::DiaBloLinear layer(
      PackedLinear(RandomBlocks(GgmlType::kQ4_1, 32, 64, 7), at::Tensor()).ptr(), 4);
  try {
    layer->merge();
    FAIL() << "merge() should throw";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("dense"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(layer->merged());
}

struct TinyBlock : torch::nn::Module {
  TinyBlock() {
    register_module("q_proj", PackedLinear(RandomBlocks(GgmlType::kQ4_1, 32, 64, 8), at::Tensor()));
  }
};

TEST(PackedLinear, InjectionWrapsPackedTargetsButRefusesSvdInitialisedLoRA) {
  TinyBlock block;
  peft::AdapterConfig pissa;
  pissa.method = peft::Method::kLoRA;
  pissa.init = peft::LoRAInit::kPiSSA;
  pissa.target_modules = {"q_proj"};
  EXPECT_THROW(peft::InjectAdapters(block, pissa), std::invalid_argument);

  peft::AdapterConfig diablo;
  diablo.method = peft::Method::kDiaBlo;
  diablo.blocks = 4;
  diablo.target_modules = {"q_proj"};
  const auto injected = peft::InjectAdapters(block, diablo);
  ASSERT_EQ(injected.size(), 1u);
  EXPECT_EQ(injected[0].layer->trainable_parameters()[0].sizes().vec(),
            (std::vector<int64_t>{4, 16, 8}));
  EXPECT_EQ(block.named_parameters().size(), 1u);  // q_proj.block_A; the blocks are a buffer
}

}  // namespace
}  // namespace diablo::model
