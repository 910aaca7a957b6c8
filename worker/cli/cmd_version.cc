// `diablo version`: what this build is and what it can run on.
#include <torch/cuda.h>
#include <torch/version.h>

#include <cstdio>

#include "diablo/build_info.h"
#include "worker/cli/commands.h"

namespace diablo::cli {

Runner RegisterVersion(CLI::App& app) {
  app.add_subcommand("version",
                     "Print the diablo version, the LibTorch it runs on, and the GPUs it sees");
  return [] {
#ifdef DIABLO_WITH_CUDA
    const char* kernels = "CPU + CUDA (sm_80, sm_90, PTX)";
#else
    const char* kernels = "CPU only (built without nvcc)";
#endif
    std::printf("diablo %s (%s, %s)\n", kVersion, kGitCommit, kBuildType);
    std::printf("libtorch %s\n", TORCH_VERSION);
    std::printf("kernels: %s\n", kernels);
    std::printf("cuda devices: %d\n", static_cast<int>(torch::cuda::device_count()));
    return 0;
  };
}

}  // namespace diablo::cli
