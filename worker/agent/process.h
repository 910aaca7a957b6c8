// A child process with its stdout and stderr on pipes: how the agent runs
// `diablo train`.  The child is the leader of its own process group (so a
// kill reaches anything it starts) and dies with the agent (PDEATHSIG), so a
// `kill -9` of the agent never leaves a trainer running unsupervised; its
// memory may be capped (worker/agent/memory_cap.h).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace diablo::agent {

class Process {
 public:
  // Starts `argv` in `cwd` with exactly `env` as its environment (nothing of
  // the agent's is inherited: see trainer_env.h).  A `memory_cap_bytes` above
  // 0 becomes the child's RLIMIT_DATA, soft and hard, so that its allocations
  // beyond it fail (ENOMEM) where the child can report them; a tighter limit
  // the agent itself runs under is kept.
  static absl::StatusOr<Process> Start(const std::vector<std::string>& argv,
                                       const std::map<std::string, std::string>& env,
                                       const std::string& cwd, int64_t memory_cap_bytes = 0);
  Process(Process&& other) noexcept;
  Process& operator=(Process&&) = delete;
  ~Process();

  pid_t pid() const { return pid_; }
  int stdout_fd() const { return out_fd_; }
  int stderr_fd() const { return err_fd_; }

  // Sends `signal` to the child's whole process group.
  void Signal(int signal) const;
  // Waits for the exit; returns the exit code, or -signal when killed by one.
  int Wait();
  // The same without waiting: nullopt while the child runs.
  std::optional<int> TryWait();

 private:
  Process(pid_t pid, int out_fd, int err_fd) : pid_(pid), out_fd_(out_fd), err_fd_(err_fd) {}
  int Reaped(int status);
  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  bool reaped_ = false;
};

// Reads a file descriptor line by line (for the child's pipes).
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}
  // False at end of file; lines come without their '\n'.
  bool Next(std::string* line);

 private:
  int fd_;
  std::string buffer_;
  bool eof_ = false;
};

}  // namespace diablo::agent
