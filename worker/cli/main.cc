// diablo: fine-tune, inspect and run language models with DiaBlo adapters on
// one machine, without the service.
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "worker/cli/commands.h"

namespace {

// Sends every allocation of 1 MiB or more straight to mmap, so a freed tensor
// goes back to the system at once.  glibc's default raises its mmap threshold
// each time a large block is freed; later activations then come from the heap,
// which grows to hold them and rarely shrinks.  On a SmolLM2 training run that
// heap slack was about 180 MiB of a 1.2 GiB peak.  MALLOC_MMAP_THRESHOLD_ in
// the environment still wins.
void KeepLargeAllocationsOutOfTheHeap() {
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr) mallopt(M_MMAP_THRESHOLD, 1 << 20);
}

}  // namespace

int main(int argc, char** argv) {
  KeepLargeAllocationsOutOfTheHeap();
  CLI::App app{
      "diablo: fine-tune large language models with DiaBlo (diagonal-block adapters).\n"
      "Runs on one machine without the service; the service's workers run the same\n"
      "command.  See `diablo <verb> --help` for each verb.\n\n"
      "Examples:\n"
      "  diablo version\n"
      "  diablo inspect --model SmolLM2-135M-Instruct.Q4_1.gguf\n"
      "  diablo estimate --model SmolLM2-135M-Instruct.Q4_1.gguf --blocks 64"};
  app.require_subcommand(1);
  std::vector<std::pair<CLI::App*, diablo::cli::Runner>> verbs;
  auto add = [&](diablo::cli::Runner runner) {
    verbs.emplace_back(app.get_subcommands({}).back(), std::move(runner));
  };
  add(diablo::cli::RegisterVersion(app));
  add(diablo::cli::RegisterInspect(app));
  add(diablo::cli::RegisterTokenize(app));
  add(diablo::cli::RegisterLogits(app));
  add(diablo::cli::RegisterGenerate(app));
  add(diablo::cli::RegisterTrain(app));
  add(diablo::cli::RegisterEval(app));
  add(diablo::cli::RegisterEstimate(app));
  add(diablo::cli::RegisterMerge(app));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error exits 2, as docs/cli.md says.
    return app.exit(e) == 0 ? 0 : 2;
  }

  for (auto& [sub, run] : verbs) {
    if (!sub->parsed()) continue;
    try {
      return run();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "diablo %s: error: %s\n", sub->get_name().c_str(), e.what());
      return 1;
    }
  }
  return 2;
}
