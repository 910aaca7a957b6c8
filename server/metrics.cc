// prometheus-cpp registry and exposer for the scheduler.
#include "server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <sys/statvfs.h>

#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/absl_view.h"
#include "diablo/v1/job.pb.h"
#include "spec/trainer_events.h"

namespace diablo::server {

namespace {
const char* CodeName(grpc::StatusCode code) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < 17 ? kNames[i] : "UNKNOWN";
}
// Compares without an early exit, so response times say nothing about how
// much of a guessed token was right.
bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  unsigned char differ = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i)
    differ |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return differ == 0;
}

// Seconds, from a quick job to a day-long one.
prometheus::Histogram::BucketBoundaries JobTimeBuckets() {
  return {1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600};
}

}  // namespace

struct Metrics::Impl {
  std::unique_ptr<prometheus::Exposer> exposer;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  prometheus::Family<prometheus::Histogram>* latency = nullptr;
  prometheus::Family<prometheus::Gauge>* jobs = nullptr;
  prometheus::Family<prometheus::Gauge>* workers = nullptr;
  prometheus::Family<prometheus::Histogram>* queue_wait = nullptr;
  prometheus::Family<prometheus::Histogram>* duration = nullptr;
  prometheus::Family<prometheus::Gauge>* job_loss = nullptr;
  prometheus::Family<prometheus::Gauge>* job_step = nullptr;
  prometheus::Family<prometheus::Gauge>* job_progress = nullptr;
  prometheus::Family<prometheus::Gauge>* job_tokens = nullptr;
  prometheus::Family<prometheus::Gauge>* job_lr = nullptr;
  prometheus::Family<prometheus::Gauge>* job_eval_loss = nullptr;
  prometheus::Family<prometheus::Gauge>* job_rss = nullptr;
  prometheus::Family<prometheus::Counter>* finished = nullptr;
  prometheus::Family<prometheus::Counter>* trainer_errors = nullptr;
  prometheus::Family<prometheus::Gauge>* oldest_queued = nullptr;
  prometheus::Family<prometheus::Gauge>* disk_free = nullptr;
  prometheus::Family<prometheus::Gauge>* disk_capacity = nullptr;
  std::string data_dir;
  bool job_name_labels = false;
  std::map<std::string, int64_t> errors_seen;  // trainer errors already counted
  std::mutex mu;
  std::set<std::string> running_jobs;  // jobs that have per-job gauges now
  double last_refresh = 0;

  prometheus::Labels JobLabels(const std::string& id, const std::string& name) const {
    if (job_name_labels) return {{"job_id", id}, {"job_name", name}};
    return {{"job_id", id}};
  }
};

std::string Metrics::ResolveListen(std::string_view listen) {
  if (listen.find(':') == std::string_view::npos)
    return absl::StrCat("127.0.0.1:", AbslView(listen));
  if (listen.front() == ':') return absl::StrCat("127.0.0.1", AbslView(listen));
  return std::string(listen);
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Start(const MetricsOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->data_dir = options.data_dir;
  impl->job_name_labels = options.job_name_labels;
  const std::string listen = ResolveListen(options.listen);
  impl->last_refresh =
      NowSeconds();  // jobs that finished before this process are not counted again
  try {
    impl->exposer = std::make_unique<prometheus::Exposer>(listen);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", e.what()));
  }
  using prometheus::BuildCounter, prometheus::BuildGauge, prometheus::BuildHistogram;
  auto& r = *impl->registry;
  impl->requests = &BuildCounter()
                        .Name("diablo_api_requests_total")
                        .Help("API calls by method and gRPC status code")
                        .Register(r);
  impl->latency = &BuildHistogram()
                       .Name("diablo_api_request_seconds")
                       .Help("API call latency by method")
                       .Register(r);
  impl->jobs = &BuildGauge().Name("diablo_jobs").Help("Jobs by state").Register(r);
  impl->workers =
      &BuildGauge().Name("diablo_workers_alive").Help("Workers with a live lease").Register(r);
  impl->queue_wait = &BuildHistogram()
                          .Name("diablo_job_queue_wait_seconds")
                          .Help("Submit to first start of finished jobs")
                          .Register(r);
  impl->duration = &BuildHistogram()
                        .Name("diablo_job_duration_seconds")
                        .Help("First start to final state of finished jobs")
                        .Register(r);
  impl->job_loss = &BuildGauge()
                        .Name("diablo_job_loss")
                        .Help("Latest training loss of a running job")
                        .Register(r);
  impl->job_step = &BuildGauge()
                        .Name("diablo_job_step")
                        .Help("Latest completed step of a running job")
                        .Register(r);
  impl->job_progress = &BuildGauge()
                            .Name("diablo_job_progress_ratio")
                            .Help("step / total_steps of a running job")
                            .Register(r);
  impl->job_tokens = &BuildGauge()
                          .Name("diablo_job_tokens_per_second")
                          .Help("Training throughput of a running job")
                          .Register(r);
  impl->job_lr = &BuildGauge()
                      .Name("diablo_job_learning_rate")
                      .Help("Latest learning rate of a running job")
                      .Register(r);
  impl->job_eval_loss = &BuildGauge()
                             .Name("diablo_job_eval_loss")
                             .Help("Latest evaluation loss of a running job (0 before the first)")
                             .Register(r);
  impl->job_rss = &BuildGauge()
                       .Name("diablo_job_peak_rss_bytes")
                       .Help("Peak resident memory of a running job's trainer (rank 0)")
                       .Register(r);
  impl->finished = &BuildCounter()
                        .Name("diablo_jobs_finished_total")
                        .Help("Jobs that reached a final state, by state")
                        .Register(r);
  impl->trainer_errors =
      &BuildCounter()
           .Name("diablo_trainer_errors_total")
           .Help("Error events trainers reported, by code (non_finite: NaN/Inf loss)")
           .Register(r);
  impl->oldest_queued = &BuildGauge()
                             .Name("diablo_queue_oldest_wait_seconds")
                             .Help("How long the oldest queued job has waited")
                             .Register(r);
  impl->disk_free = &BuildGauge()
                         .Name("diablo_data_dir_free_bytes")
                         .Help("Free bytes on the filesystem of the scheduler's data directory")
                         .Register(r);
  impl->disk_capacity = &BuildGauge()
                             .Name("diablo_data_dir_capacity_bytes")
                             .Help("Size of the filesystem of the scheduler's data directory")
                             .Register(r);
  // Series that exist from the start, so dashboards and alerts see zeros
  // rather than nothing.
  for (const char* state : {"succeeded", "failed", "cancelled"})
    impl->finished->Add({{"state", state}});
  impl->queue_wait->Add({}, JobTimeBuckets());
  impl->duration->Add({}, JobTimeBuckets());
  for (events::ErrorCode code : events::kAllErrorCodes)
    impl->trainer_errors->Add({{"code", std::string(events::ErrorCodeName(code))}});
  if (!options.token.empty()) {
    impl->exposer->RegisterAuth(
        [token = options.token](const std::string&, const std::string& password) {
          return ConstantTimeEquals(password, token);
        });
  }
  impl->exposer->RegisterCollectable(impl->registry);
  return std::unique_ptr<Metrics>(new Metrics(std::move(impl)));
}

Metrics::Metrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Metrics::~Metrics() = default;

int Metrics::port() const {
  auto ports = impl_->exposer->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void Metrics::ObserveCall(const std::string& method, grpc::StatusCode code, double seconds) {
  impl_->requests->Add({{"method", method}, {"code", CodeName(code)}}).Increment();
  impl_->latency
      ->Add({{"method", method}},
            prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                    0.25, 0.5, 1, 2.5, 5, 10})
      .Observe(seconds);
}

void Metrics::ObserveJobTimes(double queue_wait_s, double duration_s) {
  if (queue_wait_s >= 0) impl_->queue_wait->Add({}, JobTimeBuckets()).Observe(queue_wait_s);
  if (duration_s >= 0) impl_->duration->Add({}, JobTimeBuckets()).Observe(duration_s);
}

void Metrics::Refresh(Scheduler& scheduler) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  const double now = NowSeconds();
  absl::StatusOr<Scheduler::Snapshot> snapshot = scheduler.TakeSnapshot(impl_->last_refresh);
  if (!snapshot.ok()) return;
  impl_->last_refresh = now;
  for (int state = v1::JOB_STATE_QUEUED; state <= v1::JOB_STATE_CANCELLED; ++state) {
    const std::string name = absl::AsciiStrToLower(v1::JobState_Name(state).substr(10));
    auto it = snapshot->jobs_by_state.find(state);
    impl_->jobs->Add({{"state", name}})
        .Set(it == snapshot->jobs_by_state.end() ? 0 : static_cast<double>(it->second));
  }
  impl_->workers->Add({}).Set(static_cast<double>(snapshot->workers_alive));
  for (const v1::Job& job : snapshot->finished) {
    ObserveJobTimes(
        job.started_at() > 0 ? static_cast<double>(job.started_at() - job.created_at()) : -1,
        job.started_at() > 0 ? static_cast<double>(job.finished_at() - job.started_at()) : -1);
    impl_->finished
        ->Add({{"state", absl::AsciiStrToLower(v1::JobState_Name(job.state()).substr(10))}})
        .Increment();
  }
  impl_->oldest_queued->Add({}).Set(snapshot->oldest_queued_wait_s);
  for (const auto& [code, count] : snapshot->trainer_errors) {
    int64_t& seen = impl_->errors_seen[code];
    if (count > seen)
      impl_->trainer_errors->Add({{"code", code}}).Increment(static_cast<double>(count - seen));
    seen = count;
  }
  struct statvfs fs {};
  if (statvfs(impl_->data_dir.c_str(), &fs) == 0) {
    impl_->disk_free->Add({}).Set(static_cast<double>(fs.f_bavail) *
                                  static_cast<double>(fs.f_frsize));
    impl_->disk_capacity->Add({}).Set(static_cast<double>(fs.f_blocks) *
                                      static_cast<double>(fs.f_frsize));
  }
  std::set<std::string> now_running;
  for (const v1::Job& job : snapshot->running) {
    const prometheus::Labels labels = impl_->JobLabels(job.id(), job.name());
    impl_->job_loss->Add(labels).Set(job.loss());
    impl_->job_step->Add(labels).Set(static_cast<double>(job.step()));
    impl_->job_tokens->Add(labels).Set(job.tokens_per_s());
    impl_->job_progress->Add(labels).Set(job.total_steps() > 0
                                             ? static_cast<double>(job.step()) /
                                                   static_cast<double>(job.total_steps())
                                             : 0);
    impl_->job_lr->Add(labels).Set(job.lr());
    impl_->job_eval_loss->Add(labels).Set(job.eval_loss());
    impl_->job_rss->Add(labels).Set(static_cast<double>(job.peak_rss_bytes()));
    now_running.insert(job.id() + "\n" + job.name());
  }
  // A job that stopped running loses its series instead of freezing at its last value.
  for (const std::string& key : impl_->running_jobs) {
    if (now_running.count(key)) continue;
    const size_t split = key.find('\n');
    const prometheus::Labels labels = impl_->JobLabels(key.substr(0, split), key.substr(split + 1));
    for (auto* family : {impl_->job_loss, impl_->job_step, impl_->job_tokens, impl_->job_progress,
                         impl_->job_lr, impl_->job_eval_loss, impl_->job_rss})
      family->Remove(&family->Add(labels));
  }
  impl_->running_jobs = std::move(now_running);
}

CallTimer::CallTimer(Metrics* metrics, const char* method)
    : metrics_(metrics), method_(method), start_(NowSeconds()) {}

CallTimer::~CallTimer() {
  if (metrics_ != nullptr) metrics_->ObserveCall(method_, code_, NowSeconds() - start_);
}

grpc::Status CallTimer::Done(grpc::Status status) {
  code_ = status.error_code();
  return status;
}

}  // namespace diablo::server
