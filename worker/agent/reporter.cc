// Batched, ordered, retried ReportEvents calls.
#include "worker/agent/reporter.h"

#include <chrono>

#include "common/rpc_client.h"

namespace diablo::agent {
namespace {
constexpr size_t kBatch = 64;
}

Reporter::Reporter(const AgentSettings& settings, const WorkerIdentity& identity,
                   v1::WorkerService::Stub& stub, int64_t fence, int rank, const Redactor& redactor,
                   std::function<void(const std::string&)> on_stop)
    : settings_(settings),
      identity_(identity),
      stub_(stub),
      fence_(fence),
      rank_(rank),
      redactor_(redactor),
      on_stop_(std::move(on_stop)) {
  thread_ = std::thread([this] { Loop(); });
}

Reporter::~Reporter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Reporter::Event(std::string json) {
  // Step metrics may wait a moment to be batched; anything else (started,
  // checkpoint, finished, error) changes what users see and goes at once.
  const bool urgent = json.find("\"event\":\"step\"") == std::string::npos;
  v1::TrainerReport report;
  // Still JSON after redaction: paths and secrets are replaced inside string
  // values, which JSON leaves unescaped for printable text.
  report.set_event_json(redactor_.Apply(std::move(json)));
  std::lock_guard<std::mutex> lock(mu_);
  queue_.push_back(std::move(report));
  urgent_ = urgent_ || urgent;
  wake_.notify_all();
}

void Reporter::Log(std::string line) {
  v1::TrainerReport report;
  report.set_log_line(redactor_.Apply(std::move(line)));
  std::lock_guard<std::mutex> lock(mu_);
  queue_.push_back(std::move(report));
  wake_.notify_all();
}

bool Reporter::SendBatch() {
  v1::ReportEventsRequest request;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.empty() || stopped_) return true;
    request.set_fence(fence_);
    request.set_rank(rank_);
    request.set_first_seq(front_seq_);
    urgent_ = false;
    for (size_t i = 0; i < queue_.size() && i < kBatch; ++i) *request.add_reports() = queue_[i];
  }
  v1::ReportEventsResponse response;
  auto context = identity_.NewCall(settings_.rpc, std::chrono::seconds(15));
  grpc::Status status = stub_.ReportEvents(context.get(), request, &response);
  // Only a definite answer about the attempt stops it; anything else (the
  // scheduler restarting, a reset connection) is retried with the batch kept.
  const bool definite = status.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
                        status.error_code() == grpc::StatusCode::NOT_FOUND ||
                        status.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
                        status.error_code() == grpc::StatusCode::UNAUTHENTICATED;
  if (!status.ok() && !definite) return false;
  std::string stop_reason;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.erase(queue_.begin(), queue_.begin() + request.reports_size());
    front_seq_ += request.reports_size();
    if (!status.ok()) {
      stop_reason = "the scheduler refused the attempt's reports: " + status.error_message();
    } else if (response.stop()) {
      stop_reason = "the scheduler stopped the attempt (cancelled)";
    }
    if (!stop_reason.empty()) {
      stopped_ = true;
      front_seq_ += static_cast<int64_t>(queue_.size());
      queue_.clear();
    }
  }
  if (!stop_reason.empty()) on_stop_(stop_reason);
  return true;
}

void Reporter::Loop() {
  int failures = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Small delay to batch step events; sooner when closing.
      wake_.wait_for(lock, std::chrono::milliseconds(failures > 0 ? 1000 : 200), [&] {
        return closing_ || (urgent_ && failures == 0) || queue_.size() >= kBatch;
      });
      if (closing_ && (queue_.empty() || stopped_)) return;
    }
    if (SendBatch()) {
      failures = 0;
    } else {
      ++failures;
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(500 * failures, 5000)));
      std::lock_guard<std::mutex> lock(mu_);
      if (closing_ && failures > 120)
        return;  // about ten minutes of a scheduler that does not answer
    }
  }
}

void Reporter::Flush(double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.empty() || stopped_) return;
    }
    wake_.notify_all();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace diablo::agent
