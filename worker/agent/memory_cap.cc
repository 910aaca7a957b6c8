// The trainer memory cap: parsing --trainer-memory-cap, and the cap an
// attempt gets from its job's estimate.
#include "worker/agent/memory_cap.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "spec/job_estimate.h"
#include "spec/train_config.h"

namespace diablo::agent {
namespace {

// Far above any machine's memory, and still exact in a double.
constexpr int64_t kLargestCap = int64_t{1} << 60;

absl::Status NotACap(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("--trainer-memory-cap: '", text, "' ", why,
                                                 "; give auto, off, or a size such as 8GiB"));
}

// Bytes per unit, as CLI11's AsSizeValue(kb_is_1000) reads --cache-max-bytes.
bool UnitBytes(absl::string_view unit, double* bytes) {
  static const struct {
    const char* name;
    double bytes;
  } kUnits[] = {
      {"", 1},         {"b", 1},       {"k", 1e3},      {"kb", 1e3},     {"ki", 0x1p10},
      {"kib", 0x1p10}, {"m", 1e6},     {"mb", 1e6},     {"mi", 0x1p20},  {"mib", 0x1p20},
      {"g", 1e9},      {"gb", 1e9},    {"gi", 0x1p30},  {"gib", 0x1p30}, {"t", 1e12},
      {"tb", 1e12},    {"ti", 0x1p40}, {"tib", 0x1p40},
  };
  for (const auto& u : kUnits) {
    if (unit == u.name) {
      *bytes = u.bytes;
      return true;
    }
  }
  return false;
}

// LibTorch's default is one compute thread per CPU.
int64_t TrainerThreads(int64_t configured) {
  return configured > 0 ? configured : std::max<int64_t>(1, std::thread::hardware_concurrency());
}

}  // namespace

absl::StatusOr<TrainerMemoryCapSetting> ParseTrainerMemoryCap(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  TrainerMemoryCapSetting setting;
  if (lower == "auto") return setting;
  if (lower == "off") {
    setting.mode = TrainerMemoryCapSetting::Mode::kOff;
    return setting;
  }
  const size_t number_end = lower.find_first_not_of("0123456789.");
  const std::string number = lower.substr(0, number_end);
  const std::string unit =
      number_end == std::string::npos
          ? std::string()
          : std::string(absl::StripAsciiWhitespace(absl::string_view(lower).substr(number_end)));
  double value = 0, per_unit = 0;
  if (number.empty() || !absl::SimpleAtod(number, &value) || !std::isfinite(value))
    return NotACap(text, "is not a size");
  if (!UnitBytes(unit, &per_unit))
    return NotACap(text, absl::StrCat("has the unknown unit '", unit,
                                      "' (KiB, MiB, GiB, TiB, or KB, MB, GB, TB)"));
  const double bytes = value * per_unit;
  if (bytes > static_cast<double>(kLargestCap)) return NotACap(text, "is larger than any machine");
  if (bytes < static_cast<double>(kMinTrainerMemoryCap))
    return absl::InvalidArgumentError(absl::StrCat(
        "--trainer-memory-cap: '", text, "' is below ", FormatMemory(kMinTrainerMemoryCap),
        ", too little for a trainer to start; give a larger size, or off for no cap"));
  setting.mode = TrainerMemoryCapSetting::Mode::kFixed;
  setting.bytes = static_cast<int64_t>(bytes);
  return setting;
}

std::string FormatMemory(int64_t bytes) {
  char text[32];
  const double mib = static_cast<double>(bytes) / (1 << 20);
  if (bytes < (int64_t{1} << 20))
    std::snprintf(text, sizeof text, "%lld bytes", static_cast<long long>(bytes));
  else if (mib < 1024)
    std::snprintf(text, sizeof text, "%.0f MiB", mib);
  else
    std::snprintf(text, sizeof text, "%.1f GiB", mib / 1024);
  return text;
}

int64_t TrainerRuntimeBytes(int64_t threads) {
  threads = TrainerThreads(threads);
  // Threads get stacks of the soft RLIMIT_STACK (glibc's default), which the
  // trainer inherits from this agent.
  struct rlimit stack = {};
  int64_t stack_bytes = int64_t{8} << 20;
  if (getrlimit(RLIMIT_STACK, &stack) == 0 && stack.rlim_cur != RLIM_INFINITY)
    stack_bytes = std::min<int64_t>(static_cast<int64_t>(stack.rlim_cur), int64_t{1} << 30);
  return kTrainerRuntimeBytes +
         std::min<int64_t>(threads, 4096) * (stack_bytes + kTrainerArenaBytesPerThread);
}

int64_t AutoMemoryCapBytes(int64_t estimate_bytes, double headroom, int64_t runtime_bytes) {
  const double cap = std::ceil(static_cast<double>(estimate_bytes) * headroom) +
                     static_cast<double>(runtime_bytes);
  return cap >= static_cast<double>(kLargestCap) ? kLargestCap : static_cast<int64_t>(cap);
}

MemoryCap DecideMemoryCap(const TrainerMemoryCapSetting& setting, double headroom, bool gpu_worker,
                          const nlohmann::json& trainer_config, int world_size) {
  switch (setting.mode) {
    case TrainerMemoryCapSetting::Mode::kOff:
      return {0, "no memory cap (--trainer-memory-cap off)"};
    case TrainerMemoryCapSetting::Mode::kFixed:
      return {setting.bytes,
              absl::StrCat("memory cap ", FormatMemory(setting.bytes), " (--trainer-memory-cap)")};
    case TrainerMemoryCapSetting::Mode::kAuto:
      break;
  }
  // The trainer's own parser, so the estimate describes what it will run.
  train::TrainConfig config;
  try {
    config = train::ConfigFromJson(trainer_config, "the job's config");
  } catch (const std::exception& e) {
    return {0, absl::StrCat("no memory cap: cannot read the job's config to estimate its memory (",
                            e.what(), ")")};
  }
  if (config.device == "cuda" || (config.device == "auto" && gpu_worker)) {
    // The estimate is of device memory there; the host holds little of it.
    return {0,
            "no memory cap: the trainer runs on CUDA, whose host memory the estimate does not "
            "describe (--trainer-memory-cap auto caps CPU trainers; a size caps every trainer)"};
  }
  int64_t estimate = 0;
  try {
    estimate = static_cast<int64_t>(estimate::JobMemoryBytes(config, world_size));
  } catch (const std::exception& e) {
    return {0, absl::StrCat("no memory cap: cannot estimate the job's memory: ", e.what())};
  }
  const int64_t runtime = TrainerRuntimeBytes(config.threads);
  const int64_t cap = AutoMemoryCapBytes(estimate, headroom, runtime);
  return {cap,
          absl::StrCat("memory cap ", FormatMemory(cap), " = estimate ", FormatMemory(estimate),
                       " × ", headroom, " + ", FormatMemory(runtime), " runtime of ",
                       TrainerThreads(config.threads), " threads (--trainer-memory-cap auto)")};
}

}  // namespace diablo::agent
