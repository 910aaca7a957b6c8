// diablo train: fine-tune from a config file on this machine.  With --nproc N
// it starts N ranks of itself (torchrun-style environment) and waits for them.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "spec/gang_stop_policy.h"
#include "worker/cli/commands.h"
#include "worker/train/trainer.h"

namespace diablo::cli {
namespace {

struct TrainOptions {
  std::string config;
  std::vector<std::string> overrides;
  bool events = false;
  bool resume = false;
  std::string resume_from;
  int nproc = 1;
  int64_t stop_after = 0;
};

// A free loopback port for the ranks' rendezvous.
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error(std::string("cannot find a free port: ") + std::strerror(errno));
  ::close(fd);
  return ntohs(addr.sin_port);
}

volatile std::sig_atomic_t g_forward_signal = 0;
extern "C" void RememberSignal(int signal) { g_forward_signal = signal; }

// Waits for every rank.  A SIGINT/SIGTERM to the launcher goes to every rank
// (they agree on the step to stop at); a failed rank stops the others
// (spec/gang_stop_policy.h).  Returns the first non-zero exit code.
int SuperviseRanks(const std::vector<pid_t>& pids) {
  constexpr auto kFailureGrace = std::chrono::seconds(10);
  std::signal(SIGINT, RememberSignal);
  std::signal(SIGTERM, RememberSignal);
  events::GangStopPolicy gang(pids.size(), kFailureGrace);
  auto signal_running = [&](int signal) {
    for (size_t i = 0; i < pids.size(); ++i)
      if (gang.running(i)) ::kill(pids[i], signal);
  };
  int result = 0;
  while (gang.remaining() > 0) {
    if (const int signal = g_forward_signal; signal != 0) {
      g_forward_signal = 0;
      signal_running(signal);
    }
    if (gang.KillDue()) signal_running(SIGKILL);
    int status = 0;
    const pid_t done = ::waitpid(-1, &status, WNOHANG);
    if (done < 0 && errno != EINTR) break;
    if (done <= 0) {
      ::usleep(50 * 1000);
      continue;
    }
    const auto it = std::find(pids.begin(), pids.end(), done);
    if (it == pids.end()) continue;
    const size_t rank = static_cast<size_t>(it - pids.begin());
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (result == 0) result = code;
    if (gang.Exited(rank, code)) {
      std::fprintf(stderr,
                   "diablo train: rank %zu exited with %d; stopping the other ranks (SIGKILL in "
                   "%lld s)\n",
                   rank, code, static_cast<long long>(kFailureGrace.count()));
      signal_running(SIGTERM);
    }
  }
  return result;
}

// Re-runs this binary once per rank with RANK/WORLD_SIZE/... set; stdout of
// ranks other than 0 is discarded (rank 0 reports for all).  The first rank
// to fail takes the others down (SuperviseRanks).
int LaunchRanks(int nproc) {
  const int port = FreePort();
  std::vector<std::string> args;
  {
    std::FILE* cmdline = std::fopen("/proc/self/cmdline", "rb");
    if (cmdline == nullptr)
      throw std::runtime_error("cannot read /proc/self/cmdline to start the ranks");
    std::string arg;
    for (int c; (c = std::fgetc(cmdline)) != EOF;) {
      if (c == '\0') {
        args.push_back(arg);
        arg.clear();
      } else {
        arg.push_back(static_cast<char>(c));
      }
    }
    std::fclose(cmdline);
  }
  // Drop --nproc and its value from the child's arguments.
  std::vector<std::string> child_args;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--nproc") {
      ++i;
      continue;
    }
    if (args[i].rfind("--nproc=", 0) == 0) continue;
    child_args.push_back(args[i]);
  }
  std::vector<pid_t> pids;
  for (int rank = 0; rank < nproc; ++rank) {
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
    if (pid == 0) {
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      if (rank != 0) std::freopen("/dev/null", "w", stdout);
      std::vector<char*> argv;
      for (auto& a : child_args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "diablo train: cannot start rank %d: %s\n", rank, std::strerror(errno));
      std::_Exit(127);
    }
    pids.push_back(pid);
  }
  return SuperviseRanks(pids);
}

}  // namespace

Runner RegisterTrain(CLI::App& app) {
  auto options = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Fine-tune a model from a config file (YAML or JSON; see docs/training.md).\n\n"
      "Progress: a live bar on a terminal; JSON lines on stdout with --events or when\n"
      "stdout is not a terminal.  Exit codes: 0 done, 1 bad input, 3 loss became\n"
      "NaN/Inf, 4 out of memory, 5 interrupted (checkpoint written; use --resume).\n\n"
      "Examples:\n"
      "  diablo train job.yaml\n"
      "  diablo train job.yaml --set optim.lr=3e-4 --set method.blocks=32\n"
      "  diablo train job.yaml --resume          # continue an interrupted run\n"
      "  diablo train job.yaml --nproc 2         # two data-parallel ranks on this machine");
  cmd->add_option("config", options->config, "Training config (.yaml, .yml or .json)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--set", options->overrides,
                  "Override a config field: key.path=value (repeatable), e.g. optim.lr=3e-4");
  cmd->add_flag("--events", options->events, "JSON lines on stdout even on a terminal");
  cmd->add_flag("--resume", options->resume, "Continue from the newest checkpoint in output_dir");
  cmd->add_option("--resume-from", options->resume_from, "Continue from this checkpoint directory")
      ->check(CLI::ExistingDirectory);
  cmd->add_option(
         "--stop-after", options->stop_after,
         "Write a checkpoint and stop after this many steps (continue later with --resume)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--nproc", options->nproc, "Start this many data-parallel ranks on this machine")
      ->check(CLI::Range(1, 1024));
  return [options]() -> int {
    if (options->nproc > 1) return LaunchRanks(options->nproc);
    const char* rank = std::getenv("RANK");
    const bool rank0 = rank == nullptr || std::string(rank).empty() || std::string(rank) == "0";
    std::unique_ptr<train::EventSink> sink =
        rank0 ? train::MakeEventSink(options->events) : std::make_unique<train::NullSink>();
    train::TrainConfig config;
    try {
      config = train::LoadTrainConfig(options->config, options->overrides);
    } catch (const std::exception& e) {
      // The worker agent reads the event; a person reads stderr.
      if (options->events)
        sink->Emit(train::MakeErrorEvent(events::ErrorCode::kBadConfig, e.what()));
      throw;
    }
    train::RunOptions run;
    run.resume = options->resume;
    run.resume_from = options->resume_from;
    run.config_path = options->config;
    run.stop_after_steps = options->stop_after;
    return train::RunTraining(config, run, *sink);
  };
}

}  // namespace diablo::cli
