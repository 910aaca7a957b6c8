// A hostile tenant naming inputs: beta tries every spelling of alpha's files
// and of the service's own storage in every input field.  Each is refused
// with PERMISSION_DENIED naming the field, before anything is read; what the
// operator granted beta still works.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "server/spec_validation.h"
#include "tests/server/scheduler_test_util.h"

namespace diablo::server::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class HostileInputsTest : public SchedulerFixture {
 protected:
  void SetUp() override {
    SchedulerFixture::SetUp();
    // The tenants' shared filesystems live outside the service's data.
    shared_ = fs::temp_directory_path() /
              ("diablo-shared-" + std::to_string(getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(shared_);
    for (const char* tenant : {"alpha", "beta"}) {
      fs::create_directories(shared_ / tenant);
      std::ofstream(shared_ / tenant / "train.jsonl") << R"({"instruction":"Say hi","output":"hi"})"
                                                      << "\n";
      fs::create_directories(shared_ / tenant / "model");
      std::ofstream(shared_ / tenant / "model" / "config.json") << kConfig;
    }
    // What an attacker would be after: another job's adapter in the
    // service's own storage, and alpha's files.
    victim_ = dir_ / "storage" / "jobs" / "j-alpha" / "attempts" / "1" / "output" / "adapter";
    fs::create_directories(victim_);
    std::ofstream(victim_ / "adapter_model.safetensors") << "secret weights";
    fs::create_symlink(shared_ / "alpha" / "train.jsonl", shared_ / "beta" / "link.jsonl");
    fs::create_symlink(victim_, shared_ / "beta" / "adapter-link");

    inputs_.Grant("alpha", {"s3://datasets/alpha"}, {(shared_ / "alpha").string()});
    inputs_.Grant("beta", {"s3://datasets/beta", "s3://service-bucket"},
                  {(shared_ / "beta").string()});
    inputs_.Protect("file://" + (dir_ / "storage").string());
    inputs_.Protect(dir_.string());
    // Had the service used S3, its bucket is protected even when an operator
    // granted it by mistake (beta's second prefix above).
    inputs_.Protect("s3://service-bucket/diablo");
  }
  void TearDown() override {
    fs::remove_all(shared_);
    SchedulerFixture::TearDown();
  }

  // Beta's request with `field` set to `value` and every other input valid.
  absl::StatusOr<ValidatedJob> SubmitAsBeta(const std::string& field, const std::string& value) {
    v1::CreateJobRequest request;
    v1::JobSpec& spec = *request.mutable_spec();
    spec.set_model((shared_ / "beta" / "model").string());
    spec.mutable_data()->set_train((shared_ / "beta" / "train.jsonl").string());
    spec.mutable_optim()->set_max_steps(4);
    if (field == "model") spec.set_model(value);
    if (field == "data.train") spec.mutable_data()->set_train(value);
    if (field == "data.eval") spec.mutable_data()->set_eval(value);
    if (field == "init_adapter") spec.set_init_adapter(value);
    return ValidateCreateJob(
        request, ValidationContext{scheduler_.get(), "beta", dir_ / "cache", &inputs_, nullptr});
  }

  static constexpr const char* kConfig =
      R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":1000,
      "hidden_size":256,"intermediate_size":512,"num_hidden_layers":4,"num_attention_heads":4,
      "num_key_value_heads":2,"max_position_embeddings":512,"rms_norm_eps":1e-5})";

  fs::path shared_, victim_;
  InputPolicy inputs_;
};

TEST_F(HostileInputsTest, EverySpellingOfSomeoneElsesFilesIsRefusedInEveryField) {
  const std::string victim = victim_.string();
  const std::string alpha = (shared_ / "alpha").string();
  const std::string beta = (shared_ / "beta").string();
  const std::vector<std::string> hostile = {
      victim,                                            // absolute path into storage
      "file://" + victim,                                // the same as a URI
      dir_.string() + "/scheduler.db",                   // the service's database
      beta + "/../alpha/train.jsonl",                    // '..' out of a granted root
      beta + "/./train.jsonl",                           // '.' segments
      beta + "//train.jsonl",                            // empty segments
      beta + "/link.jsonl",                              // a symlink to alpha's file
      beta + "/adapter-link",                            // a symlink into storage
      beta + "/%2e%2e/alpha/train.jsonl",                // percent-encoded '..'
      "file://" + beta + "%2F..%2Falpha%2Ftrain.jsonl",  // encoded separators
      alpha + "/train.jsonl",                            // alpha's root, plainly
      "/etc/passwd",                                     // anything else readable
      "s3://datasets/alpha/train.jsonl",                 // alpha's prefix
      "s3://datasets/beta/../alpha/train.jsonl",         // '..' in a URI
      "s3://datasets/betamax/train.jsonl",               // a prefix is a whole segment
      "s3://service-bucket/diablo/jobs/j-alpha/attempts/1/output/adapter",  // the service's
      "s3://service-bucket/diablo%2Fjobs/x",                                // ... encoded
  };
  for (const std::string& field :
       std::vector<std::string>{"model", "data.train", "data.eval", "init_adapter"}) {
    for (const std::string& value : hostile) {
      SCOPED_TRACE(field + " = " + value);
      auto job = SubmitAsBeta(field, value);
      ASSERT_FALSE(job.ok());
      EXPECT_EQ(job.status().code(), absl::StatusCode::kPermissionDenied) << job.status();
      EXPECT_THAT(std::string(job.status().message()), HasSubstr("spec." + field + ": "));
    }
  }
  std::error_code ec;
  EXPECT_FALSE(fs::exists(dir_ / "cache", ec) && !fs::is_empty(dir_ / "cache", ec))
      << "a refused input must not have been read (or cached)";
}

TEST_F(HostileInputsTest, WhatTheOperatorGrantedStillWorks) {
  auto job = SubmitAsBeta("data.eval", (shared_ / "beta" / "train.jsonl").string());
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->inputs.size(), 3u);
  EXPECT_EQ(job->inputs[0].path(), fs::weakly_canonical(shared_ / "beta" / "model").string())
      << "the lease carries the resolved path";
  // Alpha may read its own files in place, which beta may not.
  EXPECT_TRUE(
      inputs_.CheckLocal("alpha", "data.train", (shared_ / "alpha" / "train.jsonl").string()).ok());
  EXPECT_TRUE(inputs_.CheckObject("alpha", "model", "s3://datasets/alpha/m.gguf").ok());
  EXPECT_FALSE(inputs_.CheckObject("beta", "model", "s3://datasets/alpha/m.gguf").ok());
}

TEST(InputPolicy, NothingIsGrantedByDefault) {
  InputPolicy none;
  EXPECT_EQ(none.CheckLocal("alpha", "model", "/mnt/models/m.gguf").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(none.CheckObject("alpha", "model", "s3://models/m.gguf").code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(InputPolicy, TheGrantsFileIsCheckedAndNamesItsMistakes) {
  auto good = InputPolicy::Parse(
      R"({"tenants": {"ml": {"object_prefixes": ["s3://data/ml/"], "local_roots": ["/mnt/ml"]}}})",
      "grants.json");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(good->CheckObject("ml", "data.train", "s3://data/ml/t.jsonl").ok());
  for (const char* bad :
       {R"([1])", R"({"tenant": {}})", R"({"tenants": {"ml": {"object_prefixes": "s3://x"}}})",
        R"({"tenants": {"ml": {"object_prefixes": ["/not/s3"]}}})",
        R"({"tenants": {"ml": {"local_roots": ["relative/root"]}}})",
        R"({"tenants": {"ml": {"local_roots": ["/mnt/../etc"]}}})"}) {
    SCOPED_TRACE(bad);
    auto parsed = InputPolicy::Parse(bad, "grants.json");
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("grants.json"));
  }
}

TEST(InputPolicy, AWorkerRefusesALeaseThatNamesItsOwnOrTheServicesFiles) {
  InputPolicy guard;
  guard.Protect("file:///var/lib/diablo/storage");
  guard.Protect("/var/lib/diablo-worker");
  EXPECT_FALSE(guard.CheckNotProtected("data.train", "/var/lib/diablo/storage/jobs/j-1/x").ok());
  EXPECT_FALSE(guard.CheckNotProtected("model", "file:///var/lib/diablo-worker/cache/x").ok());
  EXPECT_FALSE(guard.CheckNotProtected("model", "/mnt/m/../../var/lib/diablo-worker/x").ok());
  EXPECT_TRUE(guard.CheckNotProtected("model", "/mnt/models/m.gguf").ok());
  EXPECT_TRUE(CheckUploadKey("data.train", "files/f-123").ok());
  for (const char* key :
       {"jobs/j-1/attempts/1/output/adapter", "files/../jobs/x", "files/a/b", "files/"})
    EXPECT_EQ(CheckUploadKey("data.train", key).code(), absl::StatusCode::kPermissionDenied) << key;
}

}  // namespace
}  // namespace diablo::server::testing
