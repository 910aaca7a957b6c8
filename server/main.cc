// diablo-scheduler: serves the DiaBlo job API until SIGINT or SIGTERM.
#include <csignal>
#include <cstdio>
#include <pthread.h>

#include "CLI/CLI.hpp"
#include "diablo/build_info.h"
#include "server/scheduler_server.h"

namespace {

// Blocks SIGINT/SIGTERM in every thread (gRPC's included) and returns the set,
// so that the main thread alone receives them through sigwait().
sigset_t BlockShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

}  // namespace

int main(int argc, char** argv) {
  diablo::SchedulerOptions options;
  double grace_seconds = 10;

  CLI::App app{
      "diablo-scheduler: the DiaBlo fine-tuning service.\n"
      "Serves the gRPC API (diablo.v1 services, grpc.health.v1 health checking and\n"
      "server reflection) until it receives SIGINT or SIGTERM, then finishes the\n"
      "calls in flight for up to --shutdown-grace seconds.\n\n"
      "Example:\n"
      "  diablo-scheduler --listen 0.0.0.0:50051\n"
      "  diablo-ctl --server 127.0.0.1:50051 version"};
  app.set_version_flag("--version", std::string("diablo-scheduler ") + diablo::kVersion +
                                        " (" + diablo::kGitCommit + ")");
  app.add_option("--listen", options.listen_address,
                 "Address to serve on, host:port; port 0 picks a free port")
      ->capture_default_str();
  app.add_option("--max-receive-bytes", options.max_receive_message_bytes,
                 "Largest request message accepted, in bytes")
      ->capture_default_str()
      ->check(CLI::Range(1024, 1 << 30));
  app.add_option("--max-concurrent-streams", options.max_concurrent_streams,
                 "Concurrent calls allowed on one client connection")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--shutdown-grace", grace_seconds,
                 "Seconds to let running calls finish after SIGTERM")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
  CLI11_PARSE(app, argc, argv);

  sigset_t signals = BlockShutdownSignals();
  auto server = diablo::SchedulerServer::BuildAndStart(options);
  if (!server.ok()) {
    std::fprintf(stderr, "diablo-scheduler: %s\n", server.status().ToString().c_str());
    return 1;
  }
  // Tests and scripts read this line to learn the port when --listen asked for 0.
  std::fprintf(stderr, "diablo-scheduler %s listening on port %d\n", diablo::kVersion,
               (*server)->port());
  std::fflush(stderr);

  int received = 0;
  sigwait(&signals, &received);
  std::fprintf(stderr, "diablo-scheduler: received %s, shutting down\n",
               received == SIGINT ? "SIGINT" : "SIGTERM");
  (*server)->Shutdown(absl::Milliseconds(grace_seconds * 1000));
  (*server)->Wait();
  return 0;
}
