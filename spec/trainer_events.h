// The trainer's event stream as a contract between three processes: the
// trainer (`diablo train --events`) writes one JSON object per line, the
// worker agent forwards them (adding `key` to checkpoints it has uploaded)
// and decides from error codes whether a retry can help, and the scheduler
// applies them to the job.  Every event kind, error code and field any of
// them reads is named here once; docs/training.md describes the same stream.
#pragma once

#include <array>
#include <optional>
#include <span>
#include <string_view>

namespace diablo::events {

// The `event` field.
enum class Kind {
  kStarted,     // the run is set up: steps, parameters, data
  kStep,        // an optimiser step's metrics (every log_every steps)
  kEval,        // a held-out evaluation
  kCheckpoint,  // a checkpoint directory was written (the agent adds `key`)
  kStopped,     // stopped as asked (--stop-after) with a checkpoint to resume
  kFinished,    // training completed and the outputs are written
  kError,       // the run failed; `code` says why (ErrorCode)
};

inline constexpr std::array<Kind, 7> kAllKinds = {
    Kind::kStarted, Kind::kStep,     Kind::kEval, Kind::kCheckpoint,
    Kind::kStopped, Kind::kFinished, Kind::kError};

constexpr std::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kStarted:
      return "started";
    case Kind::kStep:
      return "step";
    case Kind::kEval:
      return "eval";
    case Kind::kCheckpoint:
      return "checkpoint";
    case Kind::kStopped:
      return "stopped";
    case Kind::kFinished:
      return "finished";
    case Kind::kError:
      return "error";
  }
  return "";
}

// nullopt for a name no trainer writes (readers keep such a line as a log).
constexpr std::optional<Kind> ParseKind(std::string_view name) {
  for (Kind kind : kAllKinds)
    if (KindName(kind) == name) return kind;
  return std::nullopt;
}

// The `code` field of an error event.
enum class ErrorCode {
  kBadConfig,    // the configuration or its data cannot be used
  kNonFinite,    // the loss or gradients became NaN/Inf
  kOutOfMemory,  // device or host memory ran out at these settings
  kInterrupted,  // stopped by a signal; a checkpoint was written if any step ran
  kFailed,       // anything else
};

inline constexpr std::array<ErrorCode, 5> kAllErrorCodes = {
    ErrorCode::kBadConfig, ErrorCode::kNonFinite, ErrorCode::kOutOfMemory, ErrorCode::kInterrupted,
    ErrorCode::kFailed};

constexpr std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kBadConfig:
      return "bad_config";
    case ErrorCode::kNonFinite:
      return "non_finite";
    case ErrorCode::kOutOfMemory:
      return "out_of_memory";
    case ErrorCode::kInterrupted:
      return "interrupted";
    case ErrorCode::kFailed:
      return "failed";
  }
  return "";
}

// An unknown code reads as kFailed: a newer trainer's code is an ordinary
// failure to an older agent, never a reason to stop retrying.
constexpr ErrorCode ParseErrorCode(std::string_view name) {
  for (ErrorCode code : kAllErrorCodes)
    if (ErrorCodeName(code) == name) return code;
  return ErrorCode::kFailed;
}

// Whether the same job would fail the same way on another try: the agent
// completes such an attempt as permanent and the scheduler spends no retry.
constexpr bool IsPermanent(ErrorCode code) {
  return code == ErrorCode::kBadConfig || code == ErrorCode::kNonFinite ||
         code == ErrorCode::kOutOfMemory;
}

// The trainer's exit status when a signal (SIGINT, SIGTERM) stopped it and it
// wrote its checkpoint: not a failure of one rank, since every rank of the
// run stops at the same step.  worker/train/trainer.h lists the others.
inline constexpr int kInterruptedExitCode = 5;

// Field names.  `kEvent` and `kTime` are on every event; the comment after
// each other name lists the kinds whose readers rely on it (and its JSON
// type: a non-finite number is written as null).
namespace field {
inline constexpr const char* kEvent = "event";                  // string, every kind
inline constexpr const char* kTime = "time";                    // number (Unix s), every kind
inline constexpr const char* kStep = "step";                    // integer: step..finished
inline constexpr const char* kTotalSteps = "total_steps";       // integer: started, step, stopped
inline constexpr const char* kStartStep = "start_step";         // integer: started
inline constexpr const char* kEpoch = "epoch";                  // number: step
inline constexpr const char* kLoss = "loss";                    // number: step, eval, finished
inline constexpr const char* kLr = "lr";                        // number: step
inline constexpr const char* kGradNorm = "grad_norm";           // number: step
inline constexpr const char* kTokensPerS = "tokens_per_s";      // number: step, finished
inline constexpr const char* kEtaS = "eta_s";                   // number: step
inline constexpr const char* kPeakRssBytes = "peak_rss_bytes";  // integer: step, finished
inline constexpr const char* kPerplexity = "perplexity";        // number: eval
inline constexpr const char* kExamples = "examples";            // integer: eval
inline constexpr const char* kPath = "path";                    // string: checkpoint (trainer's)
inline constexpr const char* kKey = "key";                      // string: checkpoint (agent's)
inline constexpr const char* kFinal = "final";                  // boolean: checkpoint
inline constexpr const char* kCode = "code";                    // string: error (ErrorCode)
inline constexpr const char* kMessage = "message";              // string: stopped, error
}  // namespace field

// What a reader of each kind relies on, beyond `event` and `time`; the
// trainer's tests check every event it writes carries them.
enum class Type { kInteger, kNumber, kString, kBoolean };
struct Field {
  const char* name;
  Type type;
};

inline constexpr std::array<Field, 2> kStartedFields = {
    {{field::kTotalSteps, Type::kInteger}, {field::kStartStep, Type::kInteger}}};
inline constexpr std::array<Field, 9> kStepFields = {{{field::kStep, Type::kInteger},
                                                      {field::kTotalSteps, Type::kInteger},
                                                      {field::kEpoch, Type::kNumber},
                                                      {field::kLoss, Type::kNumber},
                                                      {field::kLr, Type::kNumber},
                                                      {field::kGradNorm, Type::kNumber},
                                                      {field::kTokensPerS, Type::kNumber},
                                                      {field::kEtaS, Type::kNumber},
                                                      {field::kPeakRssBytes, Type::kInteger}}};
inline constexpr std::array<Field, 4> kEvalFields = {{{field::kStep, Type::kInteger},
                                                      {field::kLoss, Type::kNumber},
                                                      {field::kPerplexity, Type::kNumber},
                                                      {field::kExamples, Type::kInteger}}};
inline constexpr std::array<Field, 3> kCheckpointFields = {{{field::kStep, Type::kInteger},
                                                            {field::kPath, Type::kString},
                                                            {field::kFinal, Type::kBoolean}}};
inline constexpr std::array<Field, 3> kStoppedFields = {{{field::kStep, Type::kInteger},
                                                         {field::kTotalSteps, Type::kInteger},
                                                         {field::kMessage, Type::kString}}};
inline constexpr std::array<Field, 4> kFinishedFields = {{{field::kStep, Type::kInteger},
                                                          {field::kLoss, Type::kNumber},
                                                          {field::kTokensPerS, Type::kNumber},
                                                          {field::kPeakRssBytes, Type::kInteger}}};
inline constexpr std::array<Field, 2> kErrorFields = {
    {{field::kCode, Type::kString}, {field::kMessage, Type::kString}}};

constexpr std::span<const Field> RequiredFields(Kind kind) {
  switch (kind) {
    case Kind::kStarted:
      return kStartedFields;
    case Kind::kStep:
      return kStepFields;
    case Kind::kEval:
      return kEvalFields;
    case Kind::kCheckpoint:
      return kCheckpointFields;
    case Kind::kStopped:
      return kStoppedFields;
    case Kind::kFinished:
      return kFinishedFields;
    case Kind::kError:
      return kErrorFields;
  }
  return {};
}

}  // namespace diablo::events
