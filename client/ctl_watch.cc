// diablo-ctl watch and logs: follow a job's event stream, with a progress
// bar on a terminal (or JSON lines with --output json), reconnecting from the
// last event seen when the stream breaks.
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "absl/strings/str_format.h"
#include "client/ctl.h"

namespace diablo::ctl {
namespace {

class ProgressBar {
 public:
  ProgressBar() : tty_(isatty(STDERR_FILENO) != 0) {}
  ~ProgressBar() { Clear(); }

  void Update(const v1::StepMetrics& m) {
    const double fraction =
        m.total_steps() > 0 ? static_cast<double>(m.step()) / static_cast<double>(m.total_steps())
                            : 0;
    const int width = 30, filled = static_cast<int>(fraction * width);
    std::string bar(static_cast<size_t>(filled), '=');
    if (filled < width) bar += '>';
    bar.resize(width, ' ');
    line_ =
        absl::StrFormat("[%s] step %d/%d  loss %.4f  lr %.2e  %.0f tok/s  ETA %s", bar, m.step(),
                        m.total_steps(), m.loss(), m.lr(), m.tokens_per_s(), Duration(m.eta_s()));
    if (tty_) {
      std::fprintf(stderr, "\r\033[K%s", line_.c_str());
    } else if (m.step() == m.total_steps() || m.step() % 10 == 0) {
      std::fprintf(stderr, "%s\n", line_.c_str());  // a log file gets a line now and then
    }
    std::fflush(stderr);
  }
  // Prints a line above the bar.
  void Print(const std::string& text) {
    Clear();
    std::fprintf(stderr, "%s\n", text.c_str());
    if (tty_ && !line_.empty()) std::fprintf(stderr, "%s", line_.c_str());
    std::fflush(stderr);
  }

 private:
  void Clear() {
    if (tty_ && !line_.empty()) std::fprintf(stderr, "\r\033[K");
  }
  bool tty_;
  std::string line_;
};

std::string Describe(const v1::JobEvent& event) {
  switch (event.kind_case()) {
    case v1::JobEvent::kState:
      if (event.state().from() == v1::JOB_STATE_UNSPECIFIED)
        return absl::StrFormat("state: %s  (%s)", StateName(event.state().to()),
                               event.state().reason());
      return absl::StrFormat("state: %s -> %s  (%s)", StateName(event.state().from()),
                             StateName(event.state().to()), event.state().reason());
    case v1::JobEvent::kEval:
      return absl::StrFormat("eval at step %d: loss %.4f, perplexity %.2f (%d examples)",
                             event.eval().step(), event.eval().loss(), event.eval().perplexity(),
                             event.eval().examples());
    case v1::JobEvent::kCheckpoint:
      return absl::StrFormat("checkpoint at step %d stored%s", event.checkpoint().step(),
                             event.checkpoint().final() ? " (final)" : "");
    case v1::JobEvent::kLog:
      return absl::StrFormat("%s: %s", event.log().source(), event.log().line());
    default:
      return "";
  }
}

// Streams events after `*after_seq` to `handle` until the stream ends;
// reconnects (from the last event seen) when it breaks, for up to a minute.
grpc::Status Stream(const Options& options, Clients& clients, const std::string& id, bool follow,
                    int64_t* after_seq, const std::function<void(const v1::JobEvent&)>& handle) {
  int failures = 0;
  while (true) {
    v1::WatchJobRequest request;
    request.set_id(id);
    request.set_after_seq(*after_seq);
    request.set_follow(follow);
    // A watch lasts as long as the job; the deadline only bounds a dead connection.
    auto context = NewCallContext(options.rpc, std::chrono::hours(24 * 30));
    auto reader = clients.jobs->WatchJob(context.get(), request);
    v1::JobEvent event;
    while (reader->Read(&event)) {
      *after_seq = event.seq();
      failures = 0;
      handle(event);
    }
    grpc::Status status = reader->Finish();
    if (status.ok() || !IsTransient(status) || ++failures > 30) return status;
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
}

}  // namespace

int Watch(const Options& options, const std::string& id, bool) {
  Clients clients = Connect(options);
  ProgressBar bar;
  v1::JobState final_state = v1::JOB_STATE_UNSPECIFIED;
  int64_t after = 0;
  grpc::Status status = Stream(options, clients, id, true, &after, [&](const v1::JobEvent& event) {
    if (event.has_state()) final_state = event.state().to();
    if (options.json) {
      std::printf("%s\n", ToJson(event).c_str());
      std::fflush(stdout);
      return;
    }
    if (event.has_step()) {
      bar.Update(event.step());
    } else {
      bar.Print(Describe(event));
    }
  });
  if (!status.ok()) return ReportRpcError(options, status);
  if (final_state == v1::JOB_STATE_FAILED) return kJobFailed;
  if (final_state == v1::JOB_STATE_CANCELLED) return kJobCancelled;
  return kOk;
}

int Logs(const Options& options, const std::string& id, bool follow) {
  Clients clients = Connect(options);
  int64_t after = 0;
  grpc::Status status =
      Stream(options, clients, id, follow, &after, [&](const v1::JobEvent& event) {
        if (options.json) {
          std::printf("%s\n", ToJson(event).c_str());
        } else if (!event.has_step()) {
          std::printf("%s\n", Describe(event).c_str());
        }
        std::fflush(stdout);
      });
  if (!status.ok()) return ReportRpcError(options, status);
  return kOk;
}

}  // namespace diablo::ctl
