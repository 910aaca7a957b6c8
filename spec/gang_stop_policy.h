// When the ranks of one training run (a gang) stop each other.  A rank that
// fails leaves the others waiting in a collective they cannot finish: they
// get SIGTERM at once and SIGKILL after a grace period, which also ends a rank
// that is stopped (SIGSTOP) or hung and would never act on SIGTERM.  A rank
// that was interrupted is not a failure: the others stop at the same step and
// rank 0 writes the checkpoint, which must not be cut short.
//
// Both supervisors of ranks use it: `diablo train --nproc` (compute plane)
// and diablo-worker's attempt runner (control plane).  Each reaps and signals
// its own processes; this class only decides when.
#pragma once

#include <chrono>
#include <cstddef>
#include <vector>

#include "spec/trainer_events.h"

namespace diablo::events {

// True for an exit code that fails the gang: neither success nor the
// trainer's interrupted exit (a killed rank's code, in either convention,
// -signal or 128 + signal, is a failure).
constexpr bool FailsGang(int exit_code) {
  return exit_code != 0 && exit_code != kInterruptedExitCode;
}

class GangStopPolicy {
 public:
  using Clock = std::chrono::steady_clock;

  GangStopPolicy(size_t ranks, Clock::duration kill_grace)
      : running_(ranks, true), remaining_(ranks), kill_grace_(kill_grace) {}

  // Records that `rank` exited with `exit_code`.  True on the gang's first
  // failure: the caller sends SIGTERM to every rank still running.
  bool Exited(size_t rank, int exit_code) {
    if (running_[rank]) {
      running_[rank] = false;
      --remaining_;
    }
    if (!FailsGang(exit_code) || failed_) return false;
    failed_ = true;
    kill_at_ = Clock::now() + kill_grace_;
    return true;
  }

  // True once, when the grace after the first failure has run out: the
  // caller sends SIGKILL to every rank still running.
  bool KillDue() {
    if (!failed_ || killed_ || Clock::now() < kill_at_) return false;
    killed_ = true;
    return true;
  }

  bool running(size_t rank) const { return running_[rank]; }
  size_t remaining() const { return remaining_; }

 private:
  std::vector<bool> running_;
  size_t remaining_;
  Clock::duration kill_grace_;
  bool failed_ = false, killed_ = false;
  Clock::time_point kill_at_;
};

}  // namespace diablo::events
