// The verbs of the `diablo` command.  Each Register* adds a subcommand to the
// app and returns the function that runs it once parsing succeeded.
#pragma once

#include <functional>

#include "CLI/CLI.hpp"

namespace diablo::cli {

// Runs a parsed subcommand; returns the process exit code.  May throw: main()
// turns exceptions into one error line.
using Runner = std::function<int()>;

Runner RegisterVersion(CLI::App& app);
Runner RegisterInspect(CLI::App& app);
Runner RegisterTokenize(CLI::App& app);
Runner RegisterLogits(CLI::App& app);
Runner RegisterGenerate(CLI::App& app);
Runner RegisterTrain(CLI::App& app);
Runner RegisterEval(CLI::App& app);
Runner RegisterEstimate(CLI::App& app);
Runner RegisterMerge(CLI::App& app);

}  // namespace diablo::cli
