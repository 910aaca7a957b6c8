// What a trainer inherits from the agent, and what its output may carry back
// to the job's owner: no token, no storage key, no worker path.
#include "worker/agent/trainer_env.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "worker/agent/redact.h"

namespace diablo::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// An environ-style array over `entries`.
class Environ {
 public:
  explicit Environ(std::vector<std::string> entries) : entries_(std::move(entries)) {
    for (std::string& e : entries_) pointers_.push_back(e.data());
    pointers_.push_back(nullptr);
  }
  char** get() { return pointers_.data(); }

 private:
  std::vector<std::string> entries_;
  std::vector<char*> pointers_;
};

TEST(TrainerEnvironment, KeepsWhatTrainingNeedsAndNoSecret) {
  Environ agent({"PATH=/usr/bin", "HOME=/home/diablo", "LANG=C.UTF-8", "OMP_NUM_THREADS=4",
                 "CUDA_VISIBLE_DEVICES=0,1", "NCCL_DEBUG=WARN", "MALLOC_ARENA_MAX=2",
                 "DIABLO_TOKEN=dbl_worker_secret_123", "DIABLO_SERVER=10.0.0.5:50051",
                 "AWS_ACCESS_KEY_ID=AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI",
                 "DIABLO_S3_SECRET_KEY=abc", "NCCL_IB_AUTH_TOKEN=x", "SSH_AUTH_SOCK=/tmp/agent",
                 "CUDA_API_KEY=k", "no_equals_sign"});
  const auto env = TrainerEnvironment(agent.get(), {{"RANK", "1"}, {"OMP_NUM_THREADS", "2"}});
  EXPECT_EQ(env.at("PATH"), "/usr/bin");
  EXPECT_EQ(env.at("LANG"), "C.UTF-8");
  EXPECT_EQ(env.at("CUDA_VISIBLE_DEVICES"), "0,1");
  EXPECT_EQ(env.at("NCCL_DEBUG"), "WARN");
  EXPECT_EQ(env.at("MALLOC_ARENA_MAX"), "2");
  EXPECT_EQ(env.at("RANK"), "1");
  EXPECT_EQ(env.at("OMP_NUM_THREADS"), "2") << "the agent's own settings win";
  for (const char* hidden :
       {"DIABLO_TOKEN", "DIABLO_SERVER", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
        "DIABLO_S3_SECRET_KEY", "NCCL_IB_AUTH_TOKEN", "SSH_AUTH_SOCK", "CUDA_API_KEY"})
    EXPECT_EQ(env.count(hidden), 0u) << hidden << " reached the trainer";
}

TEST(Redactor, RemovesSecretValuesAndWorkerPaths) {
  Environ agent({"DIABLO_TOKEN=dbl_worker_secret_123", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7",
                 "PATH=/usr/bin", "SHORT_KEY=abc"});
  Redactor redact(Redactor::SecretsOf(agent.get(), {"s3-session-token-xyz"}),
                  {{"/var/lib/diablo-worker/", "work-dir"},
                   {"/var/lib/diablo-worker/jobs/j-1/attempt-1", "job"}});
  const std::string out = redact.Apply(
      "Traceback: open /var/lib/diablo-worker/jobs/j-1/attempt-1/data/train.jsonl failed; "
      "cache /var/lib/diablo-worker/cache/ab12; env dbl_worker_secret_123 wJalrXUtnFEMI/K7 "
      "s3-session-token-xyz abc /usr/bin");
  EXPECT_THAT(out, HasSubstr("open <job>/data/train.jsonl failed"));
  EXPECT_THAT(out, HasSubstr("cache <work-dir>/cache/ab12"));
  EXPECT_THAT(out, Not(HasSubstr("dbl_worker_secret_123")));
  EXPECT_THAT(out, Not(HasSubstr("wJalrXUtnFEMI")));
  EXPECT_THAT(out, Not(HasSubstr("s3-session-token-xyz")));
  EXPECT_THAT(out, HasSubstr("<redacted> <redacted> <redacted>"));
  EXPECT_THAT(out, HasSubstr(" abc /usr/bin")) << "short values and ordinary variables stay";
  EXPECT_THAT(out, Not(HasSubstr("/var/lib/diablo-worker")));
}

TEST(Redactor, ASecretThatContainsItsReplacementDoesNotLoop) {
  Redactor redact({"<redacted><redacted>"}, {});
  EXPECT_EQ(redact.Apply("x <redacted><redacted> y"), "x <redacted> y");
}

}  // namespace
}  // namespace diablo::agent
