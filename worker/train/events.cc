#include "worker/train/events.h"

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <optional>
#include <string>

namespace diablo::train {
namespace {

double NowSeconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

std::string Duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  auto s = static_cast<int64_t>(seconds + 0.5);
  char text[32];
  if (s >= 3600)
    std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  else
    std::snprintf(text, sizeof text, "%02lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  return text;
}

double Number(const nlohmann::json& event, const char* key) {
  auto it = event.find(key);
  return it != event.end() && it->is_number() ? it->get<double>() : NAN;
}

}  // namespace

void JsonLinesSink::Emit(nlohmann::json event) {
  event["time"] = NowSeconds();
  std::string line = event.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
}

void ProgressBarSink::Emit(nlohmann::json event) {
  const std::optional<events::Kind> kind =
      events::ParseKind(event.value(events::field::kEvent, ""));
  if (kind == events::Kind::kStep) {
    const auto step = event.value("step", int64_t{0});
    const double fraction =
        total_steps_ > 0 ? static_cast<double>(step) / static_cast<double>(total_steps_) : 0;
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(out_, "\r\033[K[%s] %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %s",
                 bar.c_str(), static_cast<long long>(step), static_cast<long long>(total_steps_),
                 Number(event, "loss"), Number(event, "lr"), Number(event, "tokens_per_s"),
                 Duration(Number(event, "eta_s")).c_str());
    bar_drawn_ = true;
    std::fflush(out_);
    return;
  }
  if (bar_drawn_) std::fprintf(out_, "\n");
  bar_drawn_ = false;
  // A kind this build does not know prints as `stopped` does: its message,
  // or the whole line.
  switch (kind.value_or(events::Kind::kStopped)) {
    case events::Kind::kStarted:
      total_steps_ = event.value("total_steps", int64_t{0});
      std::fprintf(out_,
                   "training %s: %lld steps, %lld trainable parameters (%.2f%%), %lld examples\n",
                   event.value("method", "").c_str(), static_cast<long long>(total_steps_),
                   static_cast<long long>(event.value("trainable_parameters", int64_t{0})),
                   Number(event, "trainable_percent"),
                   static_cast<long long>(event.value("train_examples", int64_t{0})));
      break;
    case events::Kind::kEval:
      std::fprintf(out_, "eval at step %lld: loss %.4f  perplexity %.3f\n",
                   static_cast<long long>(event.value("step", int64_t{0})), Number(event, "loss"),
                   Number(event, "perplexity"));
      break;
    case events::Kind::kCheckpoint:
      std::fprintf(out_, "checkpoint: %s\n", event.value("path", "").c_str());
      break;
    case events::Kind::kFinished:
      std::fprintf(out_, "finished: %lld steps in %s, final loss %.4f, adapter in %s\n",
                   static_cast<long long>(event.value("step", int64_t{0})),
                   Duration(Number(event, "elapsed_s")).c_str(), Number(event, "loss"),
                   event.value("output", "").c_str());
      break;
    case events::Kind::kError:
      std::fprintf(out_, "error: %s\n", event.value("message", "").c_str());
      break;
    case events::Kind::kStep:  // drawn above
    case events::Kind::kStopped:
      std::fprintf(out_, "%s\n", event.value("message", event.dump()).c_str());
      break;
  }
  std::fflush(out_);
}

std::unique_ptr<EventSink> MakeEventSink(bool json_lines) {
  if (json_lines || !isatty(STDOUT_FILENO)) return std::make_unique<JsonLinesSink>(stdout);
  return std::make_unique<ProgressBarSink>(stderr);
}

int64_t PeakRssBytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

}  // namespace diablo::train
