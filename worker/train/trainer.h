// The training loop: loads the model and data a TrainConfig names, trains the
// adapter (or the whole model) with AdamW, reports events, writes
// checkpoints and the final adapter.  One call per process; with
// WORLD_SIZE > 1 every rank calls it and they train as one.
#pragma once

#include <string>

#include "spec/train_config.h"
#include "spec/trainer_events.h"
#include "worker/train/events.h"

namespace diablo::train {

struct RunOptions {
  bool resume = false;      // continue from the newest checkpoint in output_dir
  std::string resume_from;  // or from this checkpoint directory
  std::string config_path;  // recorded in the started event
  // > 0: write a checkpoint and stop after this many steps of this process
  // (time-boxed sessions; the schedule still spans the whole run).
  int64_t stop_after_steps = 0;
};

// Exit codes a caller (the worker agent) can act on.
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,        // bad config, data or files: fix the input
  kExitNonFinite = 3,    // loss became NaN/Inf: lower the lr; last good checkpoint kept
  kExitOutOfMemory = 4,  // lower micro_batch / max_seq_len or enable gradient checkpointing
  kExitInterrupted = events::kInterruptedExitCode,  // SIGINT/SIGTERM: a checkpoint was written
};

// Runs the whole job, reporting through `sink` (rank 0 only; other ranks
// should pass a NullSink).  Errors that end the run are reported as an
// "error" event and returned as an exit code; nothing throws past it.
int RunTraining(const TrainConfig& config, const RunOptions& options, EventSink& sink);

}  // namespace diablo::train
