// The trainer's events: one JSON object per line on stdout (the contract the
// worker agent reads; docs/training.md lists every event and field), or a
// live progress bar on a terminal.  Only rank 0 reports.
#pragma once

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "spec/trainer_events.h"

namespace diablo::train {

class EventSink {
 public:
  virtual ~EventSink() = default;
  // `event` is one of spec/trainer_events.h's kinds (MakeEvent); the sink
  // adds "time" (Unix seconds).
  virtual void Emit(nlohmann::json event) = 0;
};

// One line per event, flushed at once so a reader sees progress live.
class JsonLinesSink : public EventSink {
 public:
  explicit JsonLinesSink(std::FILE* out) : out_(out) {}
  void Emit(nlohmann::json event) override;

 private:
  std::FILE* out_;
};

// A progress bar redrawn in place on a terminal (loss, lr, tokens/s, ETA);
// evaluations, checkpoints and errors are printed as lines above it.
class ProgressBarSink : public EventSink {
 public:
  explicit ProgressBarSink(std::FILE* out) : out_(out) {}
  void Emit(nlohmann::json event) override;

 private:
  std::FILE* out_;
  bool bar_drawn_ = false;
  int64_t total_steps_ = 0;
};

// An event of `kind` (spec/trainer_events.h) with `fields`; the sink adds
// the time.
inline nlohmann::json MakeEvent(events::Kind kind,
                                nlohmann::json fields = nlohmann::json::object()) {
  fields[events::field::kEvent] = events::KindName(kind);
  return fields;
}

// An error event with its contract code.
inline nlohmann::json MakeErrorEvent(events::ErrorCode code, const std::string& message) {
  return MakeEvent(events::Kind::kError, {{events::field::kCode, events::ErrorCodeName(code)},
                                          {events::field::kMessage, message}});
}

// Drops everything (ranks other than 0).
class NullSink : public EventSink {
 public:
  void Emit(nlohmann::json) override {}
};

// JSON lines when asked or when stdout is not a terminal; otherwise the bar
// on stderr.
std::unique_ptr<EventSink> MakeEventSink(bool json_lines);

// Peak resident memory of this process (VmHWM), bytes; 0 where unknown.
int64_t PeakRssBytes();

}  // namespace diablo::train
