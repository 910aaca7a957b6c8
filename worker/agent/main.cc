// diablo-worker: the agent that runs DiaBlo training jobs on this node for a
// diablo-scheduler, until SIGINT or SIGTERM.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/net_address.h"
#include "common/state_dir.h"
#include "diablo/build_info.h"
#include "worker/agent/agent.h"

namespace {

std::string HostName() {
  char name[HOST_NAME_MAX + 1] = {};
  gethostname(name, sizeof(name) - 1);
  return name;
}

std::filesystem::path SelfDirectory() {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
}

// Flags that are not AgentSettings themselves.
struct CommandLine {
  std::string work_dir;  // empty: the per-user state directory
  double memory_gib = 0;
  int64_t cache_max_bytes = 0;  // 0: not given
  std::string trainer_memory_cap = "auto";
};

void AddOptions(CLI::App& app, diablo::agent::AgentSettings& settings, CommandLine& flags) {
  app.add_option("--server", settings.rpc.server, "Scheduler address, host:port")
      ->envname("DIABLO_SERVER")
      ->capture_default_str();
  app.add_option("--token", settings.rpc.token, "Worker (or admin) API token")
      ->envname("DIABLO_TOKEN");
  app.add_option("--name", settings.name,
                 "Node name shown in `diablo-ctl workers` (default: host name)")
      ->envname("DIABLO_WORKER_NAME");
  app.add_option("--host", settings.host,
                 "Address other nodes of a multi-node job reach this one at")
      ->envname("DIABLO_WORKER_HOST")
      ->capture_default_str();
  app.add_option("--devices", settings.devices, "GPUs to offer; 0 runs one CPU rank at a time")
      ->envname("DIABLO_DEVICES")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  app.add_option("--memory-gib", flags.memory_gib,
                 "Memory one rank may use, GiB: one GPU's memory on a GPU worker (required there), "
                 "default this machine's RAM on a CPU worker")
      ->envname("DIABLO_MEMORY_GIB")
      ->check(CLI::Range(0.0, 1e6));
  app.add_option("--work-dir", flags.work_dir,
                 "Job directories and the input cache (default: $XDG_STATE_HOME/diablo/worker, "
                 "else ~/.local/state/diablo/worker)")
      ->envname("DIABLO_WORK_DIR");
  app.add_option("--cache-max-bytes", flags.cache_max_bytes,
                 "Bytes the input cache (<work-dir>/cache: uploaded datasets and models by "
                 "SHA-256) may hold, e.g. 200GiB; the least recently used files are deleted to "
                 "make room, never one a running attempt uses, and an input that cannot fit is "
                 "fetched for its attempt only (default: half the work dir's file system, at "
                 "most 100 GiB)")
      ->envname("DIABLO_CACHE_MAX_BYTES")
      ->transform(CLI::AsSizeValue(/*kb_is_1000=*/true))
      ->check(CLI::Range(int64_t{1} << 20, int64_t{1} << 60));
  app.add_option(
         "--trainer-memory-cap", flags.trainer_memory_cap,
         "Memory each trainer may allocate (its RLIMIT_DATA): a job that needs more fails "
         "with out_of_memory, without a retry, instead of the node running out. auto: the "
         "job's memory estimate x --trainer-memory-headroom, plus 1 GiB and about 16 MiB per "
         "thread for the runtime, on CPU trainers only (trainers on CUDA get no cap); off: "
         "no cap; or a size for every trainer, e.g. 16GiB")
      ->envname("DIABLO_TRAINER_MEMORY_CAP")
      ->capture_default_str();
  app.add_option("--trainer-memory-headroom", settings.trainer_memory_headroom,
                 "With --trainer-memory-cap auto: the factor on the job's estimate, for what the "
                 "estimate leaves out (allocator slack, long examples)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 100.0));
  app.add_option("--diablo", settings.diablo_binary,
                 "The `diablo` trainer binary (default: next to diablo-worker)");
  app.add_option("--storage", settings.storage_override,
                 "Storage URI, instead of the one the scheduler announces");
  app.add_flag("--keep-job-dirs", settings.keep_job_dirs,
               "Keep job directories after attempts end");
  app.add_option("--shutdown-grace", settings.shutdown_grace_s,
                 "When this worker stops (SIGTERM): seconds its trainers get to write a checkpoint "
                 "before SIGKILL; their jobs then resume from it elsewhere")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option(
         "--kill-grace", settings.kill_grace_s,
         "When a job is cancelled or moved: seconds between SIGTERM and SIGKILL of its trainer")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 600.0));
  app.add_option("--timeout", settings.rpc.timeout_s,
                 "Deadline of each call to the scheduler, seconds")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 3600.0));
  app.add_option("--tls-ca", settings.rpc.tls_ca,
                 "CA certificate (PEM) of the scheduler; enables TLS");
  app.add_option("--tls-cert", settings.rpc.tls_cert, "Client certificate (PEM) for mutual TLS");
  app.add_option("--tls-key", settings.rpc.tls_key, "Client private key (PEM) for mutual TLS");
}

// Checks the command line and fills in what it left to defaults.
absl::Status CompleteSettings(diablo::agent::AgentSettings& settings, const CommandLine& flags) {
  if (auto address = diablo::ParseHostPort(settings.rpc.server, "--server"); !address.ok())
    return address.status();
  if (settings.devices > 0 && flags.memory_gib <= 0) {
    // Host RAM says nothing about what fits on a GPU: placement would overcommit.
    return absl::InvalidArgumentError(absl::StrCat(
        "--devices ", settings.devices, " needs --memory-gib (the memory of one GPU, e.g. 80)"));
  }
  settings.memory_bytes =
      flags.memory_gib > 0 ? static_cast<int64_t>(flags.memory_gib * (1 << 30))
                           : static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE);
  std::string work_dir = flags.work_dir;
  if (work_dir.empty()) {
    absl::StatusOr<std::string> state = diablo::DefaultStateDir("worker");
    if (!state.ok())
      return absl::FailedPreconditionError(
          absl::StrCat(state.status().message(), "; name one with --work-dir or DIABLO_WORK_DIR"));
    work_dir = *state;
  }
  settings.work_dir = std::filesystem::absolute(work_dir);
  if (settings.diablo_binary.empty())
    settings.diablo_binary = (SelfDirectory() / "diablo").string();
  if (access(settings.diablo_binary.c_str(), X_OK) != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("the trainer ", settings.diablo_binary,
                     " is not an executable; point --diablo at `diablo`"));
  std::error_code ec;
  std::filesystem::create_directories(settings.work_dir, ec);
  if (ec)
    return absl::InvalidArgumentError(
        absl::StrCat("--work-dir ", settings.work_dir.string(), ": ", ec.message()));
  absl::StatusOr<diablo::agent::TrainerMemoryCapSetting> cap =
      diablo::agent::ParseTrainerMemoryCap(flags.trainer_memory_cap);
  if (!cap.ok()) return cap.status();
  settings.trainer_memory_cap = *cap;
  settings.cache_max_bytes = flags.cache_max_bytes;
  if (settings.cache_max_bytes == 0) {
    // Half the disk leaves the other half to job directories and checkpoints.
    const std::filesystem::space_info space = std::filesystem::space(settings.work_dir, ec);
    settings.cache_max_bytes = diablo::agent::kDefaultCacheMaxBytes;
    if (!ec && space.capacity > 0)
      settings.cache_max_bytes =
          std::min<int64_t>(settings.cache_max_bytes, static_cast<int64_t>(space.capacity / 2));
  }
  return absl::OkStatus();
}

// Runs the agent until SIGINT or SIGTERM, which drain it.
int RunUntilSignalled(const diablo::agent::AgentSettings& settings) {
  // Signals go to one thread, which shuts the agent down.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  diablo::agent::Agent agent(settings);
  std::thread waiter([&] {
    int received = 0;
    sigwait(&signals, &received);
    std::fprintf(stderr, "diablo-worker: received %s, stopping\n",
                 received == SIGINT ? "SIGINT" : "SIGTERM");
    agent.Shutdown();
  });
  waiter.detach();
  absl::Status status = agent.Run();
  if (!status.ok()) {
    std::fprintf(stderr, "diablo-worker: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  diablo::agent::AgentSettings settings;
  settings.name = HostName();
  CommandLine flags;
  CLI::App app{
      "diablo-worker: runs DiaBlo fine-tuning jobs on this node for a diablo-scheduler.\n"
      "Registers, keeps a heartbeat, leases jobs that fit, runs one `diablo train` per\n"
      "device (one for a CPU node) with the torchrun environment, streams their events,\n"
      "uploads checkpoints and adapters to storage, and stops trainers on cancel.\n\n"
      "Example:\n"
      "  DIABLO_TOKEN=<worker token> diablo-worker --server 10.0.0.5:50051 --devices 8 --host "
      "10.0.0.7"};
  app.set_version_flag("--version", std::string("diablo-worker ") + diablo::kVersion + " (" +
                                        diablo::kGitCommit + ")");
  AddOptions(app, settings, flags);
  CLI11_PARSE(app, argc, argv);
  if (absl::Status ok = CompleteSettings(settings, flags); !ok.ok()) {
    std::fprintf(stderr, "diablo-worker: %s\n", std::string(ok.message()).c_str());
    return 2;
  }
  return RunUntilSignalled(settings);
}
