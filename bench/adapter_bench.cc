// CPU cost of DiaBlo against LoRA at equal trainable parameters, and of each
// against the frozen base layer it wraps, all measured in one run:
//   base     y = x W^T, then dx           (what the frozen model pays anyway)
//   diablo   DiaBloLinear forward + backward (dx and dA)
//   lora     LoRALinear forward + backward (dx, dA, dB)
//   *_adapter  the adapter's own work alone, with preallocated outputs
//              (DiaBlo's three block ops; LoRA's six GEMMs hand-fused);
//              diablo_adapter_blas forces the batched-BLAS CPU path, the
//              alternative to the AVX-512 kernels, for comparison
// Prints a summary of ratios at the end.  Usage:
//   adapter_bench [--threads=N] [Google Benchmark flags]
// Repetitions are interleaved at random so that load changes on a shared
// machine hit every variant alike; each figure is the fastest repetition.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "kernels/block_diag.h"
#include "kernels/block_diag_cpu_kernels.h"
#include "worker/peft/diablo_linear.h"
#include "worker/peft/lora_linear.h"

namespace {

using diablo::kernels::BlockLayout;

constexpr int64_t kTokens = 2048;

struct Shape {
  std::string name;
  int64_t in, out, blocks;
  int64_t rank;  // LoRA rank with (nearly) DiaBlo's parameter count
  int iterations;
};

int64_t MatchingRank(int64_t in, int64_t out, int64_t blocks) {
  const double params = static_cast<double>(BlockLayout::For(in, out, blocks).parameters());
  return std::max<int64_t>(1, std::llround(params / static_cast<double>(in + out)));
}

// Everything one shape's benchmarks share, built once.
struct Fixture {
  explicit Fixture(const Shape& s) : shape(s) {
    at::manual_seed(0);
    weight = at::randn({s.out, s.in}) / std::sqrt(static_cast<double>(s.in));
    x = at::randn({kTokens, s.in}).requires_grad_();
    dy = at::randn({kTokens, s.out});
    diablo = diablo::peft::DiaBloLinear(weight, at::Tensor(), s.blocks);
    lora = diablo::peft::LoRALinear(weight, at::Tensor(), s.rank, 2.0 * s.rank);
    at::NoGradGuard no_grad;
    diablo->block_A().normal_(0.0, 0.02);
    lora->lora_B().normal_(0.0, 0.02);
    y_buf = at::zeros({kTokens, s.out});
    dx_buf = at::zeros({kTokens, s.in});
  }
  Shape shape;
  at::Tensor weight, x, dy, y_buf, dx_buf;
  diablo::peft::DiaBloLinear diablo{nullptr};
  diablo::peft::LoRALinear lora{nullptr};
};

void ClearGrads(Fixture& f) {
  f.x.mutable_grad() = at::Tensor();
  for (const at::Tensor& p : f.diablo->trainable_parameters()) p.mutable_grad() = at::Tensor();
  for (const at::Tensor& p : f.lora->trainable_parameters()) p.mutable_grad() = at::Tensor();
}

void Base(benchmark::State& state, Fixture* f) {
  for (auto _ : state) {
    ClearGrads(*f);
    at::linear(f->x, f->weight).backward(f->dy);
  }
}

void DiaBloLayer(benchmark::State& state, Fixture* f) {
  for (auto _ : state) {
    ClearGrads(*f);
    f->diablo->forward(f->x).backward(f->dy);
  }
}

void LoRALayer(benchmark::State& state, Fixture* f) {
  for (auto _ : state) {
    ClearGrads(*f);
    f->lora->forward(f->x).backward(f->dy);
  }
}

void DiaBloAdapterOn(benchmark::State& state, Fixture* f, diablo::kernels::cpu::Path path) {
  diablo::kernels::cpu::SetPathForTesting(path);
  at::NoGradGuard no_grad;
  const at::Tensor x = f->x.detach(), A = f->diablo->block_A().detach();
  const BlockLayout& layout = f->diablo->layout();
  for (auto _ : state) {
    diablo::kernels::BlockDiagForwardInto(f->y_buf, x, A, layout);
    diablo::kernels::BlockDiagBackwardInputInto(f->dx_buf, f->dy, A, layout);
    benchmark::DoNotOptimize(diablo::kernels::BlockDiagBackwardWeight(x, f->dy, layout));
  }
  diablo::kernels::cpu::SetPathForTesting(diablo::kernels::cpu::Path::kAuto);
}

void DiaBloAdapter(benchmark::State& state, Fixture* f) {
  DiaBloAdapterOn(state, f, diablo::kernels::cpu::Path::kAuto);
}

void DiaBloAdapterBlas(benchmark::State& state, Fixture* f) {
  DiaBloAdapterOn(state, f, diablo::kernels::cpu::Path::kBlas);
}

void LoRAAdapter(benchmark::State& state, Fixture* f) {
  at::NoGradGuard no_grad;
  const at::Tensor x = f->x.detach(), A = f->lora->lora_A().detach(),
                   B = f->lora->lora_B().detach();
  const double s = f->lora->scaling();
  for (auto _ : state) {
    const at::Tensor h = at::mm(x, A.t());  // [T, r]
    f->y_buf.addmm_(h, B.t(), 1.0, s);
    const at::Tensor dh = at::mm(f->dy, B).mul_(s);
    benchmark::DoNotOptimize(at::mm(f->dy.t(), h).mul_(s));  // dB
    benchmark::DoNotOptimize(at::mm(dh.t(), x));             // dA
    f->dx_buf.addmm_(dh, A);
  }
}

// Keeps the fastest repetition of every benchmark for the summary.
class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Iteration || run.error_occurred) continue;
      // One thread: CPU time, which load from other processes on a shared
      // machine inflates far less than wall time.  More threads: wall time.
      const double t =
          at::get_num_threads() == 1 ? run.GetAdjustedCPUTime() : run.GetAdjustedRealTime();
      const double seconds = t / benchmark::GetTimeUnitMultiplier(run.time_unit);
      double& best = best_[run.run_name.function_name];
      best = best == 0.0 ? seconds : std::min(best, seconds);
    }
    ConsoleReporter::ReportRuns(runs);
  }
  double Ms(const std::string& name) const {
    const auto it = best_.find(name);
    return it == best_.end() ? std::numeric_limits<double>::quiet_NaN() : it->second * 1e3;
  }

 private:
  std::map<std::string, double> best_;
};

void PrintSummary(const SummaryReporter& r, const std::vector<Shape>& shapes) {
  std::printf(
      "\n==== DiaBlo vs LoRA, CPU fp32, %lld tokens, %d thread(s); fastest repetition, %s ====\n",
      static_cast<long long>(kTokens), at::get_num_threads(),
      at::get_num_threads() == 1 ? "CPU time" : "wall time");
  bool all_met = true;
  for (const Shape& s : shapes) {
    const BlockLayout l = BlockLayout::For(s.in, s.out, s.blocks);
    const int64_t lora_params = s.rank * (s.in + s.out);
    const double base = r.Ms("base/" + s.name), dia = r.Ms("diablo/" + s.name),
                 lora = r.Ms("lora/" + s.name), dia_a = r.Ms("diablo_adapter/" + s.name),
                 dia_blas = r.Ms("diablo_adapter_blas/" + s.name),
                 lora_a = r.Ms("lora_adapter/" + s.name);
    const double dia_over = dia - base, lora_over = lora - base;
    std::printf(
        "\n%s: DiaBlo N=%lld -> %lld blocks of %lldx%lld, %lld params; LoRA rank %lld, %lld "
        "params\n",
        s.name.c_str(), static_cast<long long>(s.blocks), static_cast<long long>(l.blocks),
        static_cast<long long>(l.block_in), static_cast<long long>(l.block_out),
        static_cast<long long>(l.parameters()), static_cast<long long>(s.rank),
        static_cast<long long>(lora_params));
    std::printf("  base fwd+dx %9.2f ms | DiaBlo layer %9.2f ms | LoRA layer %9.2f ms\n", base, dia,
                lora);
    std::printf("  adapter alone: DiaBlo %8.2f ms (%s; BLAS path %.2f ms) | LoRA %8.2f ms\n", dia_a,
                diablo::kernels::cpu::ChoosePath(l) == diablo::kernels::cpu::Path::kAvx512
                    ? "AVX-512 kernels"
                    : "BLAS path",
                dia_blas, lora_a);
    const double ratio_layer = dia / lora, ratio_adapter = dia_a / lora_a;
    const double overhead = dia_over / base, overhead_adapter = dia_a / base;
    std::printf("  DiaBlo/LoRA   layer time %.3f   adapter work %.3f   (target <= 1)\n",
                ratio_layer, ratio_adapter);
    std::printf(
        "  DiaBlo overhead / base   layer %+.1f%%   adapter work %.1f%%   (target <= 10%%)\n",
        100.0 * overhead, 100.0 * overhead_adapter);
    std::printf("  LoRA   overhead / base   layer %+.1f%%   adapter work %.1f%%\n",
                100.0 * lora_over / base, 100.0 * lora_a / base);
    const bool met =
        ratio_layer <= 1.0 && ratio_adapter <= 1.0 && overhead <= 0.10 && overhead_adapter <= 0.10;
    std::printf("  targets: %s\n", met ? "met" : "NOT met");
    all_met = all_met && met;
  }
  std::printf("\nall targets %s\n", all_met ? "met" : "NOT met (see above)");
}

}  // namespace

int main(int argc, char** argv) {
  // Our flag first; the rest goes to Google Benchmark, with random
  // interleaving on unless the caller sets it.
  std::vector<char*> args;
  bool interleaving_set = false;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      at::set_num_threads(std::atoi(argv[i] + 10));
      continue;
    }
    if (std::strstr(argv[i], "random_interleaving")) interleaving_set = true;
    args.push_back(argv[i]);
  }
  static char interleave[] = "--benchmark_enable_random_interleaving=true";
  if (!interleaving_set) args.push_back(interleave);
  int bench_argc = static_cast<int>(args.size());
  benchmark::Initialize(&bench_argc, args.data());
  if (benchmark::ReportUnrecognizedArguments(bench_argc, args.data())) return 1;

  std::vector<Shape> shapes = {
      {"4096x4096", 4096, 4096, 64, 32, 1},
      {"576x1536", 576, 1536, 64, MatchingRank(576, 1536, 64), 8},
  };
  std::vector<std::unique_ptr<Fixture>> fixtures;
  for (const Shape& s : shapes) {
    fixtures.push_back(std::make_unique<Fixture>(s));
    Fixture* f = fixtures.back().get();
    for (auto [name, fn] : {std::pair{"base/", &Base},
                            {"diablo/", &DiaBloLayer},
                            {"lora/", &LoRALayer},
                            {"diablo_adapter/", &DiaBloAdapter},
                            {"diablo_adapter_blas/", &DiaBloAdapterBlas},
                            {"lora_adapter/", &LoRAAdapter}}) {
      const bool adapter_only = std::strstr(name, "adapter") != nullptr;
      benchmark::RegisterBenchmark((name + s.name).c_str(), fn, f)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->Iterations(adapter_only ? 4 * s.iterations : s.iterations)
          ->Repetitions(5);
    }
  }
  SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  PrintSummary(reporter, shapes);
  benchmark::Shutdown();
  return 0;
}
