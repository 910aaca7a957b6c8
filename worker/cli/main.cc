// diablo: fine-tune, inspect and run language models with DiaBlo adapters on
// one machine, without the service.
#include <c10/util/Exception.h>

#include <cstdio>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "worker/cli/commands.h"

int main(int argc, char** argv) {
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
    } catch (const c10::Error& e) {
      // LibTorch's what() carries a C++ backtrace; a person needs the message.
      std::fprintf(stderr, "diablo %s: error: %s\n", sub->get_name().c_str(),
                   e.what_without_backtrace());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "diablo %s: error: %s\n", sub->get_name().c_str(), e.what());
      return 1;
    }
  }
  return 2;
}
