// A child process with its stdout and stderr on pipes: how the agent runs
// `diablo train`.  The child is the leader of its own process group (so a
// kill reaches anything it starts) and dies with the agent (PDEATHSIG), so a
// `kill -9` of the agent never leaves a trainer running unsupervised.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace diablo::agent {

class Process {
 public:
  // Starts `argv` in `cwd` with exactly `env` as its environment (nothing of
  // the agent's is inherited: see trainer_env.h).
  static absl::StatusOr<Process> Start(const std::vector<std::string>& argv,
                                       const std::map<std::string, std::string>& env,
                                       const std::string& cwd);
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

 private:
  Process(pid_t pid, int out_fd, int err_fd) : pid_(pid), out_fd_(out_fd), err_fd_(err_fd) {}
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
