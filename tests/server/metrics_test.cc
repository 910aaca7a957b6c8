// /metrics as an outsider meets it: loopback unless told otherwise, a token
// when one is configured, and no tenant's free-text job names in labels
// unless the operator opts in.
#include "server/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "absl/strings/escaping.h"
#include "tests/server/scheduler_test_util.h"

namespace diablo::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// One HTTP/1.0 GET of /metrics on 127.0.0.1:port; the whole response.
std::string Get(int port, const std::string& authorization = "") {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    close(fd);
    return "connect failed";
  }
  std::string request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n";
  if (!authorization.empty()) request += "Authorization: " + authorization + "\r\n";
  request += "\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return "write failed";
  }
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = read(fd, buffer, sizeof buffer)) > 0;) response.append(buffer, n);
  close(fd);
  return response;
}

std::string Basic(const std::string& user, const std::string& password) {
  return "Basic " + absl::Base64Escape(user + ":" + password);
}

TEST(MetricsListen, ABarePortBindsLoopbackOnly) {
  EXPECT_EQ(Metrics::ResolveListen("9464"), "127.0.0.1:9464");
  EXPECT_EQ(Metrics::ResolveListen(":9464"), "127.0.0.1:9464");
  EXPECT_EQ(Metrics::ResolveListen("0.0.0.0:9464"), "0.0.0.0:9464");
  EXPECT_EQ(Metrics::ResolveListen("[::1]:9464"), "[::1]:9464");
}

class MetricsTest : public testing::SchedulerFixture {
 protected:
  // A job named `name` that is RUNNING, so it has per-job series.
  void RunAJobNamed(const std::string& name) {
    const std::string w = Register("w1");
    v1::CreateJobRequest request;
    request.set_name(name);
    ValidatedJob job;
    job.spec_json = R"({"model":"/models/m.gguf"})";
    job.config_json = R"({"model":"/models/m.gguf","data":{"train":"/data/t.jsonl"}})";
    job.estimated_bytes = 1 << 30;
    auto created = scheduler_->CreateJob("alpha", request, job);
    ASSERT_TRUE(created.ok()) << created.status();
    auto lease = Lease(w);
    ASSERT_TRUE(lease.has_value());
    ASSERT_TRUE(Report(lease->fence(), R"({"event":"started","total_steps":10})").ok());
  }

  std::unique_ptr<Metrics> StartMetrics(const std::string& token, bool job_names) {
    auto metrics = Metrics::Start(
        {.listen = "0", .data_dir = dir_.string(), .token = token, .job_name_labels = job_names});
    EXPECT_TRUE(metrics.ok()) << metrics.status();
    return metrics.ok() ? std::move(*metrics) : nullptr;
  }
};

TEST_F(MetricsTest, WithATokenScrapesWithoutItAreRefused) {
  auto metrics = StartMetrics("s3cret-token", false);
  ASSERT_NE(metrics, nullptr);
  EXPECT_THAT(Get(metrics->port()), HasSubstr("401"));
  EXPECT_THAT(Get(metrics->port(), Basic("prometheus", "wrong")), HasSubstr("401"));
  const std::string ok = Get(metrics->port(), Basic("prometheus", "s3cret-token"));
  EXPECT_THAT(ok, HasSubstr("200"));
  EXPECT_THAT(ok, HasSubstr("diablo_jobs"));
}

TEST_F(MetricsTest, JobNamesAreNotLabelsUnlessTheOperatorOptsIn) {
  RunAJobNamed("alpha-secret-project");
  auto quiet = StartMetrics("", false);
  ASSERT_NE(quiet, nullptr);
  quiet->Refresh(*scheduler_);
  const std::string scrape = Get(quiet->port());
  EXPECT_THAT(scrape, HasSubstr("diablo_job_step{job_id=\"j-"));
  EXPECT_THAT(scrape, Not(HasSubstr("alpha-secret-project")));

  auto named = StartMetrics("", true);
  ASSERT_NE(named, nullptr);
  named->Refresh(*scheduler_);
  EXPECT_THAT(Get(named->port()), HasSubstr("job_name=\"alpha-secret-project\""));
}

}  // namespace
}  // namespace diablo::server
