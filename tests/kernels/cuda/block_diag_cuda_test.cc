// GPU tests of the CUDA block-diagonal ops (kernels/cuda_dispatch.h): every
// path (hand-written, batched GEMM, auto) against the CPU path of
// kernels/block_diag.h by normalised error, over real-model and awkward shapes,
// fp32/bf16/fp16, 2-D/3-D and strided activations.  Skipped without a GPU.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/block_diag.h"
#include "kernels/cuda_dispatch.h"

namespace diablo::kernels {
namespace {

using cuda::Path;

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) {
      GTEST_SKIP() << "no CUDA device: the CUDA kernels can only be checked on a GPU machine";
    }
    at::manual_seed(20240611);
    // The fp32 tolerances assume IEEE fp32 GEMMs (LibTorch's default), not TF32.
    at::globalContext().setAllowTF32CuBLAS(false);
  }
};

// ||got - want|| / ||want||, in double on the CPU.
double RelErr(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.cpu().to(at::kDouble), w = want.cpu().to(at::kDouble);
  return (g - w).norm().item<double>() / std::max(w.norm().item<double>(), 1e-300);
}

// Error budget of the in-place outputs: one rounding into the activation
// dtype, plus (GEMM path) A rounded to it for the tensor cores.
double ActivationTolerance(at::ScalarType type) {
  switch (type) {
    case at::kBFloat16:
      return 1e-2;
    case at::kHalf:
      return 2e-3;
    default:
      return 1e-5;
  }
}
// dA is fp32 from exactly the same (rounded) inputs: summation order only,
// with room for cuBLAS's reduced-precision split-K on bf16/fp16.
double GradTolerance(at::ScalarType type) { return type == at::kFloat ? 1e-5 : 5e-3; }

// How an activation sits in memory; the logical values are the same.
enum class Placement {
  kRows,             // [R, width], contiguous
  kBatch,            // [B, S, width], contiguous
  kRowStrided,       // [R, width] columns 3.. of a [R, width + 7] buffer
  kTransposedBatch,  // [B, S, width] as the transpose of [S, B, width]: no 2-D view
  kColumnStrided,    // [R, width] as the transpose of [width, R]: last stride R
};

const char* Name(Placement p) {
  switch (p) {
    case Placement::kRows:
      return "2-D";
    case Placement::kBatch:
      return "3-D";
    case Placement::kRowStrided:
      return "row-strided 2-D";
    case Placement::kTransposedBatch:
      return "transposed 3-D";
    case Placement::kColumnStrided:
      return "column-strided 2-D";
  }
  return "?";
}

constexpr Placement kPlacements[] = {Placement::kRows, Placement::kBatch, Placement::kRowStrided,
                                     Placement::kTransposedBatch, Placement::kColumnStrided};

std::vector<int64_t> LeadingShape(Placement p, int64_t rows) {
  const bool batched = p == Placement::kBatch || p == Placement::kTransposedBatch;
  return batched ? std::vector<int64_t>{3, (rows + 2) / 3} : std::vector<int64_t>{rows};
}

// Values exactly representable in `type`, kept as fp32 on the CPU for the
// reference.
at::Tensor RandomValues(std::vector<int64_t> shape, at::ScalarType type, double scale = 1.0) {
  return (at::randn(shape, at::kFloat) * scale).to(type).to(at::kFloat);
}

// A CUDA tensor of `type` holding `values` (fp32, CPU) in placement `p`.
// `buffer` receives the memory it lives in (for checks around the view).
at::Tensor Place(const at::Tensor& values, Placement p, at::ScalarType type, at::Tensor* buffer) {
  const auto options = at::TensorOptions().dtype(type).device(at::kCUDA);
  const int64_t width = values.size(-1);
  at::Tensor view;
  switch (p) {
    case Placement::kRows:
    case Placement::kBatch:
      *buffer = at::empty(values.sizes(), options);
      view = *buffer;
      break;
    case Placement::kRowStrided:
      *buffer = at::randn({values.size(0), width + 7}, options);
      view = buffer->narrow(1, 3, width);
      break;
    case Placement::kTransposedBatch:
      *buffer = at::empty({values.size(1), values.size(0), width}, options);
      view = buffer->transpose(0, 1);
      break;
    case Placement::kColumnStrided:
      *buffer = at::empty({width, values.size(0)}, options);
      view = buffer->t();
      break;
  }
  view.copy_(values);
  return view;
}

struct ShapeCase {
  const char* name;
  int64_t in, out, requested_blocks, rows;
};

// Real projections (SmolLM2 576<->1536, Llama 4096^2 at N=64), square, wide,
// tall, non-divisible (1000 at N=64 -> 63 blocks), blocks reading only padding
// on one side, a last block partial on both sides, blocks too large for one
// pass of the hand-written kernel, and a single token.
const ShapeCase kShapes[] = {
    {"square_64_N8", 64, 64, 8, 130},
    {"wide_256x1024_N16", 256, 1024, 16, 97},
    {"tall_1024x256_N16", 1024, 256, 16, 97},
    {"nondivisible_1000_N64", 1000, 1000, 64, 257},
    {"smollm_up_576x1536_N64", 576, 1536, 64, 257},
    {"smollm_down_1536x576_N64", 1536, 576, 64, 257},
    {"llama_4096x4096_N64", 4096, 4096, 64, 129},
    {"padding_in_100x1000_N64", 100, 1000, 64, 33},
    {"padding_out_1000x100_N64", 1000, 100, 64, 33},
    {"partial_both_300x200_N7", 300, 200, 7, 45},
    {"large_blocks_1024x768_N2", 1024, 768, 2, 45},
    {"single_token_576x1536_N64", 576, 1536, 64, 1},
};

void PrintTo(const ShapeCase& s, std::ostream* os) {
  *os << s.name << " (in=" << s.in << " out=" << s.out << " N=" << s.requested_blocks
      << " rows=" << s.rows << ")";
}

constexpr at::ScalarType kTypes[] = {at::kFloat, at::kBFloat16, at::kHalf};
constexpr Path kPaths[] = {Path::kSmallBlockKernel, Path::kGemm, Path::kAuto};

std::string Name(at::ScalarType type, Path path) {
  return std::string(type == at::kFloat      ? "fp32"
                     : type == at::kBFloat16 ? "bf16"
                                             : "fp16") +
         ", " +
         (path == Path::kSmallBlockKernel ? "small-block kernel"
          : path == Path::kGemm           ? "GEMM"
                                          : "auto");
}

// One ctest entry per shape and op (each is a process that loads LibTorch);
// dtypes, paths and placements are looped inside, named by SCOPED_TRACE.
class BlockDiagCudaTest : public CudaTest, public ::testing::WithParamInterface<ShapeCase> {
 protected:
  const ShapeCase& shape() const { return GetParam(); }
  BlockLayout layout() const {
    return BlockLayout::For(shape().in, shape().out, shape().requested_blocks);
  }
  // A ~ N(0, 1/b_in) so the adapter's contribution is as large as the base
  // output it is added to; padding entries are random too and must be ignored.
  at::Tensor Adapter() const {
    const BlockLayout l = layout();
    return at::randn({l.blocks, l.block_in, l.block_out}, at::kFloat) /
           std::sqrt(static_cast<double>(l.block_in));
  }
};

// An in-place op on a placed output: the result must match the CPU reference
// and, for row-strided outputs, the columns around the view stay untouched.
template <typename Op>
void CheckInPlace(const at::Tensor& input_values, const at::Tensor& out_values,
                  const at::Tensor& reference, Placement p, at::ScalarType type, Op op) {
  SCOPED_TRACE(Name(p));
  at::Tensor in_buffer, out_buffer;
  const at::Tensor input = Place(input_values, p, type, &in_buffer);
  at::Tensor output = Place(out_values, p, type, &out_buffer);
  const at::Tensor buffer_before = out_buffer.clone();
  // The data must be able to fail the check: the update is not negligible.
  ASSERT_GT(RelErr(out_values, reference), 0.05);
  op(output, input);
  EXPECT_EQ(output.sizes(), reference.sizes());
  EXPECT_LT(RelErr(output, reference), ActivationTolerance(type));
  if (p == Placement::kRowStrided) {
    const int64_t width = out_values.size(-1);
    EXPECT_TRUE(out_buffer.narrow(1, 0, 3).equal(buffer_before.narrow(1, 0, 3)));
    EXPECT_TRUE(out_buffer.narrow(1, 3 + width, 4).equal(buffer_before.narrow(1, 3 + width, 4)));
  }
}

TEST_P(BlockDiagCudaTest, ForwardMatchesCpu) {
  const BlockLayout l = layout();
  const at::Tensor a_cpu = Adapter();
  const at::Tensor a = a_cpu.cuda();
  for (at::ScalarType type : kTypes) {
    for (Placement p : kPlacements) {
      std::vector<int64_t> x_shape = LeadingShape(p, shape().rows), y_shape = x_shape;
      x_shape.push_back(l.in);
      y_shape.push_back(l.out);
      const at::Tensor x = RandomValues(x_shape, type);
      const at::Tensor y0 = RandomValues(y_shape, type);
      at::Tensor reference = y0.clone();
      BlockDiagForwardInto(reference, x, a_cpu, l);
      for (Path path : kPaths) {
        SCOPED_TRACE("forward, " + Name(type, path));
        CheckInPlace(x, y0, reference, p, type, [&](at::Tensor& y, const at::Tensor& xin) {
          cuda::ForwardInto(y, xin, a, l, path);
        });
      }
    }
  }
}

TEST_P(BlockDiagCudaTest, BackwardInputMatchesCpu) {
  const BlockLayout l = layout();
  const at::Tensor a_cpu = Adapter();
  const at::Tensor a = a_cpu.cuda();
  for (at::ScalarType type : kTypes) {
    for (Placement p : kPlacements) {
      std::vector<int64_t> dy_shape = LeadingShape(p, shape().rows), dx_shape = dy_shape;
      dy_shape.push_back(l.out);
      dx_shape.push_back(l.in);
      const at::Tensor dy = RandomValues(dy_shape, type);
      const at::Tensor dx0 = RandomValues(dx_shape, type);
      at::Tensor reference = dx0.clone();
      BlockDiagBackwardInputInto(reference, dy, a_cpu, l);
      for (Path path : kPaths) {
        SCOPED_TRACE("backward-input, " + Name(type, path));
        CheckInPlace(dy, dx0, reference, p, type, [&](at::Tensor& dx, const at::Tensor& dyin) {
          cuda::BackwardInputInto(dx, dyin, a, l, path);
        });
      }
    }
  }
}

TEST_P(BlockDiagCudaTest, BackwardWeightMatchesCpu) {
  const BlockLayout l = layout();
  for (at::ScalarType type : kTypes) {
    for (Placement p : kPlacements) {
      std::vector<int64_t> x_shape = LeadingShape(p, shape().rows), dy_shape = x_shape;
      x_shape.push_back(l.in);
      dy_shape.push_back(l.out);
      const at::Tensor x = RandomValues(x_shape, type);
      const at::Tensor dy = RandomValues(dy_shape, type);
      const at::Tensor reference = BlockDiagBackwardWeight(x, dy, l);
      ASSERT_GT(reference.abs().max().item<float>(), 0.f);
      at::Tensor x_buffer, dy_buffer;
      const at::Tensor x_gpu = Place(x, p, type, &x_buffer);
      const at::Tensor dy_gpu = Place(dy, p, type, &dy_buffer);
      for (Path path : kPaths) {
        SCOPED_TRACE(std::string("backward-weight, ") + Name(p) + ", " + Name(type, path));
        const at::Tensor grad = cuda::BackwardWeight(x_gpu, dy_gpu, l, path);
        EXPECT_EQ(grad.scalar_type(), at::kFloat);
        EXPECT_TRUE(grad.is_cuda());
        ASSERT_EQ(grad.sizes(), reference.sizes());
        EXPECT_LT(RelErr(grad, reference), GradTolerance(type));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, BlockDiagCudaTest, ::testing::ValuesIn(kShapes),
                         [](const ::testing::TestParamInfo<ShapeCase>& info) {
                           return std::string(info.param.name);
                         });

// The reference's layout for 1000 columns at N=64 really has 63 blocks, and
// the gradient of the padding (the last block's rows/columns past 1000) is
// exactly zero on both paths.
TEST_F(CudaTest, PaddingOfTheLastBlockGetsExactlyZeroGradient) {
  const BlockLayout l = BlockLayout::For(1000, 1000, 64);
  ASSERT_EQ(l.blocks, 63);
  ASSERT_EQ(l.block_in, 16);
  const int64_t used = 1000 - 62 * 16;  // columns of the last block inside the layer
  const auto options = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor x = at::randn({300, 1000}, options), dy = at::randn({300, 1000}, options);
  for (Path path : {Path::kSmallBlockKernel, Path::kGemm}) {
    const at::Tensor grad = cuda::BackwardWeight(x, dy, l, path).cpu();
    EXPECT_EQ(grad[62].narrow(0, used, 16 - used).abs().max().item<float>(), 0.f);
    EXPECT_EQ(grad[62].narrow(1, used, 16 - used).abs().max().item<float>(), 0.f);
    EXPECT_GT(grad[62].narrow(0, 0, used).narrow(1, 0, used).abs().max().item<float>(), 0.f);
  }
}

// Training runs must be repeatable: the gradient's cross-token reduction uses
// per-chunk partial sums added in a fixed order, not atomics.
TEST_F(CudaTest, WeightGradientIsBitwiseRepeatableOverManyTokens) {
  for (const auto& [in, out] : {std::pair<int64_t, int64_t>{576, 1536}, {4096, 4096}}) {
    const BlockLayout l = BlockLayout::For(in, out, 64);
    const auto options = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
    const at::Tensor x = at::randn({8192, in}, options), dy = at::randn({8192, out}, options);
    const at::Tensor first = cuda::BackwardWeight(x, dy, l, Path::kSmallBlockKernel);
    const at::Tensor second = cuda::BackwardWeight(x, dy, l, Path::kSmallBlockKernel);
    EXPECT_TRUE(first.equal(second)) << in << "x" << out;
    // And the many-chunk reduction is right, not only repeatable.
    const at::Tensor reference =
        BlockDiagBackwardWeight(x.cpu().to(at::kFloat), dy.cpu().to(at::kFloat), l);
    // fp32 sums of 8192 terms in two different orders: ~eps * sqrt(8192).
    EXPECT_LT(RelErr(first, reference), 5e-5) << in << "x" << out;
  }
}

// The public entry points of block_diag.h route CUDA tensors here.
TEST_F(CudaTest, PublicOpsOnCudaTensorsMatchCpu) {
  const BlockLayout l = BlockLayout::For(576, 1536, 64);
  const at::Tensor a = at::randn({l.blocks, l.block_in, l.block_out}) / 3.0;
  const at::Tensor x = RandomValues({2, 50, 576}, at::kBFloat16);
  const at::Tensor y0 = RandomValues({2, 50, 1536}, at::kBFloat16);
  at::Tensor reference = y0.clone();
  BlockDiagForwardInto(reference, x, a, l);
  at::Tensor y = y0.to(at::kBFloat16).cuda();
  BlockDiagForwardInto(y, x.to(at::kBFloat16).cuda(), a.cuda(), l);
  EXPECT_LT(RelErr(y, reference), ActivationTolerance(at::kBFloat16));

  const at::Tensor grad =
      BlockDiagBackwardWeight(x.to(at::kBFloat16).cuda(), y0.to(at::kBFloat16).cuda(), l);
  EXPECT_TRUE(grad.is_cuda());
  EXPECT_LT(RelErr(grad, BlockDiagBackwardWeight(x, y0, l)), 1e-5);
}

TEST_F(CudaTest, EmptyBatchIsANoOpAndHasZeroGradient) {
  const BlockLayout l = BlockLayout::For(576, 1536, 64);
  const auto options = at::TensorOptions().dtype(at::kHalf).device(at::kCUDA);
  const at::Tensor a = at::randn({l.blocks, l.block_in, l.block_out}, options.dtype(at::kFloat));
  const at::Tensor x = at::empty({0, 576}, options);
  at::Tensor y = at::empty({0, 1536}, options);
  for (Path path : {Path::kSmallBlockKernel, Path::kGemm, Path::kAuto}) {
    EXPECT_NO_THROW(cuda::ForwardInto(y, x, a, l, path));
    const at::Tensor grad = cuda::BackwardWeight(x, y, l, path);
    ASSERT_EQ(grad.sizes(), a.sizes());
    EXPECT_EQ(grad.abs().max().item<float>(), 0.f);
  }
}

TEST_F(CudaTest, RejectsOperandsItCannotUse) {
  const BlockLayout l = BlockLayout::For(576, 1536, 64);
  const auto cuda_bf16 = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor a = at::zeros({l.blocks, l.block_in, l.block_out}, cuda_bf16.dtype(at::kFloat));
  const at::Tensor x = at::randn({8, 576}, cuda_bf16);
  at::Tensor y = at::randn({8, 1536}, cuda_bf16);

  at::Tensor y_cpu = y.cpu();
  EXPECT_THROW(cuda::ForwardInto(y_cpu, x, a, l), std::exception) << "output on the CPU";
  EXPECT_THROW(cuda::ForwardInto(y, x, a.to(at::kHalf), l), std::exception) << "fp16 adapter";
  EXPECT_THROW(cuda::ForwardInto(y, x.to(at::kFloat), a, l), std::exception) << "mixed dtypes";
  EXPECT_THROW(cuda::ForwardInto(y, x.narrow(0, 0, 4), a, l), std::exception) << "row mismatch";
  EXPECT_THROW(cuda::ForwardInto(y, x.narrow(1, 0, 500), a, l), std::exception) << "wrong width";
  EXPECT_THROW(cuda::ForwardInto(y, x, a.narrow(0, 0, 10), l), std::exception) << "adapter shape";
  at::Tensor expanded = at::randn({1, 1536}, cuda_bf16).expand({8, 1536});
  EXPECT_THROW(cuda::ForwardInto(expanded, x, a, l), std::exception) << "overlapping output";
  EXPECT_THROW(cuda::BackwardWeight(x.to(at::kDouble), y, l), std::exception) << "fp64 input";
}

}  // namespace
}  // namespace diablo::kernels
