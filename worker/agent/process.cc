// fork/exec with pipes, process groups, PDEATHSIG and a memory cap.
#include "worker/agent/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace diablo::agent {

absl::StatusOr<Process> Process::Start(const std::vector<std::string>& argv,
                                       const std::map<std::string, std::string>& env,
                                       const std::string& cwd, int64_t memory_cap_bytes) {
  if (argv.empty()) return absl::InvalidArgumentError("no command to run");
  // RLIMIT_DATA, not RLIMIT_AS: since Linux 4.7 it counts private writable
  // mappings (heap, anonymous memory, libraries' data segments) but not
  // read-only file mappings such as the libraries' code or an mmap'ed model,
  // nor address space reserved without write access (guard pages, malloc
  // arenas not yet used), which would fail healthy trainers.
  struct rlimit data_limit = {RLIM_INFINITY, RLIM_INFINITY};
  if (memory_cap_bytes > 0) {
    getrlimit(RLIMIT_DATA, &data_limit);
    // Lowering a hard limit needs no privilege; raising one would fail.
    if (data_limit.rlim_max == RLIM_INFINITY ||
        static_cast<rlim_t>(memory_cap_bytes) < data_limit.rlim_max)
      data_limit.rlim_max = static_cast<rlim_t>(memory_cap_bytes);
    data_limit.rlim_cur = data_limit.rlim_max;  // hard too: the trainer cannot lift it
  }
  // Everything the child needs is built before fork: between fork and exec
  // only async-signal-safe calls are allowed in a threaded program.
  std::vector<std::string> env_strings;
  for (const auto& [name, value] : env) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp, args;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = argv;
  for (std::string& s : argv_copy) args.push_back(s.data());
  args.push_back(nullptr);

  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0)
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    // The agent blocks SIGTERM/SIGINT in all its threads (one thread waits for
    // them); a blocked mask survives exec, so the trainer must get it cleared
    // or it would never see the SIGTERM that asks it to checkpoint and stop.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the agent died before prctl took effect
    dup2(out[1], 1);
    dup2(err[1], 2);
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(127);
    // setrlimit is a bare system call in glibc (no locks, no allocation).
    if (memory_cap_bytes > 0 && setrlimit(RLIMIT_DATA, &data_limit) != 0) {
      const char message[] = "diablo-worker: cannot cap the trainer's memory (setrlimit)\n";
      (void)!write(2, message, sizeof(message) - 1);
      _exit(127);
    }
    execve(args[0], args.data(), envp.data());
    const char message[] = "diablo-worker: cannot execute the trainer\n";
    (void)!write(2, message, sizeof(message) - 1);
    _exit(127);
  }
  setpgid(pid, pid);  // also from the parent, so Signal() works at once
  close(out[1]);
  close(err[1]);
  return Process(pid, out[0], err[0]);
}

Process::Process(Process&& other) noexcept
    : pid_(other.pid_), out_fd_(other.out_fd_), err_fd_(other.err_fd_), reaped_(other.reaped_) {
  other.pid_ = -1;
  other.out_fd_ = other.err_fd_ = -1;
}

Process::~Process() {
  if (pid_ > 0 && !reaped_) {
    Signal(SIGKILL);
    Wait();
  }
  if (out_fd_ >= 0) close(out_fd_);
  if (err_fd_ >= 0) close(err_fd_);
}

void Process::Signal(int signal) const {
  if (pid_ > 0 && !reaped_) kill(-pid_, signal);
}

int Process::Wait() {
  if (reaped_ || pid_ <= 0) return -1;
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  return Reaped(status);
}

std::optional<int> Process::TryWait() {
  if (reaped_ || pid_ <= 0) return -1;
  int status = 0;
  const pid_t done = waitpid(pid_, &status, WNOHANG);
  if (done == 0 || (done < 0 && errno == EINTR)) return std::nullopt;
  return Reaped(status);
}

int Process::Reaped(int status) {
  reaped_ = true;
  // Anything the trainer started in its group goes with it.
  kill(-pid_, SIGKILL);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1;
}

bool LineReader::Next(std::string* line) {
  while (true) {
    const size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      *line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return true;
    }
    if (eof_) {
      if (buffer_.empty()) return false;
      *line = std::move(buffer_);
      buffer_.clear();
      return true;
    }
    char chunk[8192];
    const ssize_t n = read(fd_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      eof_ = true;
      continue;
    }
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

}  // namespace diablo::agent
