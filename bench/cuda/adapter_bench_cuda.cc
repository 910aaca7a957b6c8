// GPU benchmark of the DiaBlo adapter's share of a training step (bf16,
// 8192 tokens by default): the hand-written kernels, the batched-GEMM path and
// the automatic pick, against LoRA with the same number of trainable
// parameters and against the frozen base layer's forward + input backward,
// all measured in the same run with CUDA events.  Prints ratios.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAEvent.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "kernels/block_diag.h"
#include "kernels/cuda_dispatch.h"

namespace {

using diablo::kernels::BlockLayout;
using diablo::kernels::cuda::Path;

struct Options {
  int64_t tokens = 8192;
  int warmup = 10;
  int iters = 50;
  int repeats = 5;
};

// Mean microseconds per call of `fn`: the median over `repeats` runs of
// `iters` back-to-back calls between two CUDA events, after `warmup` calls.
double TimeUs(const Options& o, const std::function<void()>& fn) {
  for (int i = 0; i < o.warmup; ++i) fn();
  const auto stream = at::cuda::getCurrentCUDAStream();
  std::vector<double> samples;
  for (int r = 0; r < o.repeats; ++r) {
    c10::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
    start.record(stream);
    for (int i = 0; i < o.iters; ++i) fn();
    stop.record(stream);
    stop.synchronize();
    samples.push_back(1000.0 * start.elapsed_time(stop) / o.iters);
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

struct Row {
  std::string name;
  double forward = 0, backward_input = 0, backward_weight = 0;
  double total() const { return forward + backward_input + backward_weight; }
};

void PrintRow(const Row& row, double base_total) {
  std::printf("  %-34s %10.1f %10.1f %10.1f %10.1f %9.3fx\n", row.name.c_str(), row.forward,
              row.backward_input, row.backward_weight, row.total(), row.total() / base_total);
}

double RelDiff(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor fa = a.to(at::kFloat), fb = b.to(at::kFloat);
  return (fa - fb).norm().item<double>() / std::max(fb.norm().item<double>(), 1e-30);
}

void BenchShape(const Options& o, int64_t in, int64_t out, int64_t requested_blocks) {
  const BlockLayout l = BlockLayout::For(in, out, requested_blocks);
  const int64_t params = l.parameters();
  // LoRA rank with the same trainable parameter count: r * (in + out).
  const int64_t rank = std::max<int64_t>(
      1, std::llround(static_cast<double>(params) / static_cast<double>(in + out)));
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const auto fp32 = bf16.dtype(at::kFloat);
  const int64_t t = o.tokens;

  const at::Tensor x = at::randn({t, in}, bf16);
  const at::Tensor dy = at::randn({t, out}, bf16);
  at::Tensor y = at::empty({t, out}, bf16);
  at::Tensor dx = at::empty({t, in}, bf16);
  const at::Tensor w = at::randn({out, in}, bf16) / std::sqrt(static_cast<double>(in));
  const at::Tensor a = at::randn({l.blocks, l.block_in, l.block_out}, fp32) * 1e-2;
  // LoRA's factors in bf16 for the tensor cores (a fp32 master copy would be
  // cast once per step, which is not timed); gradients come out in fp32.
  const at::Tensor lora_a = at::randn({rank, in}, bf16) / std::sqrt(static_cast<double>(in));
  const at::Tensor lora_b = at::randn({out, rank}, bf16) * 1e-2;
  const double lora_scale = 2.0;  // alpha / r; free, fused into the GEMM

  std::printf(
      "\n%lld -> %lld, N=%lld: %lld blocks of %lldx%lld, %lld trainable parameters; "
      "%lld tokens, bf16 activations\n",
      static_cast<long long>(in), static_cast<long long>(out),
      static_cast<long long>(requested_blocks), static_cast<long long>(l.blocks),
      static_cast<long long>(l.block_in), static_cast<long long>(l.block_out),
      static_cast<long long>(params), static_cast<long long>(t));

  // The two DiaBlo paths must agree before their speed means anything.
  {
    at::Tensor y_small = at::zeros({t, out}, bf16), y_gemm = at::zeros({t, out}, bf16);
    diablo::kernels::cuda::ForwardInto(y_small, x, a, l, Path::kSmallBlockKernel);
    diablo::kernels::cuda::ForwardInto(y_gemm, x, a, l, Path::kGemm);
    const double grad_diff =
        RelDiff(diablo::kernels::cuda::BackwardWeight(x, dy, l, Path::kSmallBlockKernel),
                diablo::kernels::cuda::BackwardWeight(x, dy, l, Path::kGemm));
    std::printf("  paths agree: forward rel. diff %.2e, weight-gradient rel. diff %.2e\n",
                RelDiff(y_small, y_gemm), grad_diff);
  }

  Row base{"frozen base layer (bf16 GEMM)"};
  base.forward = TimeUs(o, [&] { at::mm_out(y, x, w.t()); });
  base.backward_input = TimeUs(o, [&] { at::mm_out(dx, dy, w); });

  auto diablo_row = [&](const char* name, Path path) {
    Row row{name};
    row.forward = TimeUs(o, [&] { diablo::kernels::cuda::ForwardInto(y, x, a, l, path); });
    row.backward_input =
        TimeUs(o, [&] { diablo::kernels::cuda::BackwardInputInto(dx, dy, a, l, path); });
    row.backward_weight =
        TimeUs(o, [&] { (void)diablo::kernels::cuda::BackwardWeight(x, dy, l, path); });
    return row;
  };
  const Row small = diablo_row("DiaBlo hand-written kernels", Path::kSmallBlockKernel);
  const Row gemm = diablo_row("DiaBlo batched GEMM", Path::kGemm);
  const Row automatic = diablo_row("DiaBlo auto (what training uses)", Path::kAuto);

  // LoRA: forward h = x A^T, y += s h B^T; backward dh = s dy B, dx += dh A,
  // dB = s dy^T h, dA = dh^T x.  h and dh are kept from the forward/backward.
  Row lora{"LoRA r=" + std::to_string(rank) + " (same parameters)"};
  const at::Tensor h = at::mm(x, lora_a.t());
  const at::Tensor dh = at::mm(dy, lora_b) * lora_scale;
  lora.forward = TimeUs(o, [&] {
    const at::Tensor hidden = at::mm(x, lora_a.t());
    y.addmm_(hidden, lora_b.t(), 1.0, lora_scale);
  });
  lora.backward_input = TimeUs(o, [&] {
    const at::Tensor dhidden = at::mm(dy, lora_b);
    dx.addmm_(dhidden, lora_a, 1.0, lora_scale);
  });
  lora.backward_weight = TimeUs(o, [&] {
    (void)(at::mm(dy.t(), h, at::kFloat) * lora_scale);
    (void)at::mm(dh.t(), x, at::kFloat);
  });

  std::printf("  %-34s %10s %10s %10s %10s %10s\n", "microseconds per call", "forward", "bwd-input",
              "bwd-weight", "total", "vs base");
  for (const Row* row :
       std::initializer_list<const Row*>{&base, &small, &gemm, &automatic, &lora}) {
    PrintRow(*row, base.total());
  }
  std::printf(
      "  hand-written / GEMM: forward %.2fx, bwd-input %.2fx, bwd-weight %.2fx, "
      "total %.2fx (below 1: hand-written faster)\n",
      small.forward / gemm.forward, small.backward_input / gemm.backward_input,
      small.backward_weight / gemm.backward_weight, small.total() / gemm.total());
  std::printf(
      "  DiaBlo auto / LoRA: %.2fx;  base + DiaBlo auto = %.3fx base, "
      "base + LoRA = %.3fx base\n",
      automatic.total() / lora.total(), (base.total() + automatic.total()) / base.total(),
      (base.total() + lora.total()) / base.total());
}

bool ParseFlag(const char* arg, const char* name, int64_t* value) {
  const size_t n = std::strlen(name);
  if (std::strncmp(arg, name, n) != 0 || arg[n] != '=') return false;
  char* end = nullptr;
  const long long v = std::strtoll(arg + n + 1, &end, 10);
  if (end == arg + n + 1 || *end != '\0' || v <= 0) return false;
  *value = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    int64_t iters = o.iters;
    if (ParseFlag(argv[i], "--tokens", &o.tokens)) continue;
    if (ParseFlag(argv[i], "--iters", &iters)) {
      o.iters = static_cast<int>(iters);
      continue;
    }
    std::fprintf(stderr,
                 "adapter_bench_cuda: unknown or invalid argument '%s'\n"
                 "usage: adapter_bench_cuda [--tokens=N (default 8192)] [--iters=N (default 50)]\n",
                 argv[i]);
    return 2;
  }
  if (!torch::cuda::is_available()) {
    std::printf(
        "adapter_bench_cuda: no CUDA device on this machine, nothing measured "
        "(run it on a machine with an NVIDIA GPU)\n");
    return 0;
  }
  try {
    // Timings of the fp32 paths are not reported, but keep GEMMs IEEE anyway.
    at::globalContext().setAllowTF32CuBLAS(false);
    std::printf("adapter_bench_cuda on %s: median of %d runs of %d calls after %d warm-up calls\n",
                at::cuda::getCurrentDeviceProperties()->name, o.repeats, o.iters, o.warmup);
    BenchShape(o, 4096, 4096, 64);  // Llama-7B-class attention projection
    BenchShape(o, 576, 1536, 64);   // SmolLM2-135M MLP up/gate projection
  } catch (const std::exception& e) {
    std::fprintf(stderr, "adapter_bench_cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
