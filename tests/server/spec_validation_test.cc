// CreateJob validation: what a submit with a bad spec, a missing or relative
// input, a broken dataset or impossible settings gets back — before anything
// is written.
#include "server/spec_validation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "tests/server/scheduler_test_util.h"

namespace diablo::server::testing {
namespace {

using ::testing::HasSubstr;

class SpecValidationTest : public SchedulerFixture {
 protected:
  void SetUp() override {
    SchedulerFixture::SetUp();
    model_dir_ = dir_ / "model";
    std::filesystem::create_directories(model_dir_);
    std::ofstream(model_dir_ / "config.json")
        << R"({"architectures":["LlamaForCausalLM"],"model_type":"llama",
      "vocab_size":1000,"hidden_size":256,"intermediate_size":512,"num_hidden_layers":4,
      "num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":512,"rms_norm_eps":1e-5,
      "tie_word_embeddings":true})";
    data_ = dir_ / "train.jsonl";
    std::ofstream(data_) << R"({"instruction":"Say hi","output":"hi"})"
                         << "\n"
                         << R"({"instruction":"Say bye","output":"bye"})"
                         << "\n";
    request_.mutable_spec()->set_model(model_dir_.string());
    request_.mutable_spec()->mutable_data()->set_train(data_.string());
    request_.mutable_spec()->mutable_optim()->set_max_steps(10);
    // The operator lets both tenants read this directory in place.
    inputs_.Grant("a", {}, {dir_.string()});
    inputs_.Grant("b", {}, {dir_.string()});
  }

  absl::StatusOr<ValidatedJob> Validate() {
    return ValidateCreateJob(
        request_, ValidationContext{scheduler_.get(), "a", dir_ / "cache", &inputs_, nullptr});
  }

  void ExpectInvalid(const std::string& needle) {
    auto job = Validate();
    EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument) << job.status();
    EXPECT_THAT(std::string(job.status().message()), HasSubstr(needle));
  }

  std::filesystem::path model_dir_, data_;
  v1::CreateJobRequest request_;
  InputPolicy inputs_;
};

TEST_F(SpecValidationTest, AValidSpecResolvesInputsAndEstimatesMemory) {
  auto job = Validate();
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_GT(job->estimated_bytes, 1 << 20);
  ASSERT_EQ(job->inputs.size(), 2u);
  EXPECT_EQ(job->inputs[0].field(), "model");
  EXPECT_EQ(job->inputs[0].path(), model_dir_.string());
  EXPECT_EQ(job->inputs[1].field(), "data.train");
  EXPECT_THAT(job->config_json, HasSubstr("\"max_steps\":10"));
  EXPECT_THAT(job->config_json, ::testing::Not(HasSubstr("output_dir")));
}

TEST_F(SpecValidationTest, BadValuesNameTheField) {
  request_.mutable_spec()->mutable_optim()->set_lr(-1);
  ExpectInvalid("optim.lr");
}

TEST_F(SpecValidationTest, UnknownMethodIsRejected) {
  request_.mutable_spec()->mutable_method()->set_name("dora");
  ExpectInvalid("method.name");
}

TEST_F(SpecValidationTest, ATargetThatMatchesNothingIsRejected) {
  request_.mutable_spec()->mutable_method()->add_target_modules("attention_dense");
  ExpectInvalid("attention_dense");
}

TEST_F(SpecValidationTest, RelativePathsAreRejectedWithWhatToDo) {
  request_.mutable_spec()->mutable_data()->set_train("data/train.jsonl");
  ExpectInvalid("relative path");
}

TEST_F(SpecValidationTest, MissingModelIsRejected) {
  const std::string missing = (dir_ / "nonexistent" / "model.gguf").string();
  request_.mutable_spec()->set_model(missing);
  ExpectInvalid("spec.model: " + missing + ": no such file");
}

TEST_F(SpecValidationTest, UnknownUploadIsRejected) {
  request_.mutable_spec()->mutable_data()->set_train("upload://f-0000000000000000");
  ExpectInvalid("no uploaded file");
}

TEST_F(SpecValidationTest, ABrokenDatasetLineIsReportedWithItsNumber) {
  std::ofstream(data_, std::ios::app) << "{not json\n";
  ExpectInvalid("spec.data.train: line 3: not valid JSON");
}

TEST_F(SpecValidationTest, ADatasetOfUnknownRecordsIsRejected) {
  std::ofstream(data_) << R"({"prompt":"x","completion":"y"})"
                       << "\n";
  ExpectInvalid("cannot tell the format");
}

TEST_F(SpecValidationTest, AnEmptyDatasetIsRejected) {
  std::ofstream(data_, std::ios::trunc).flush();
  ExpectInvalid("no records");
}

TEST_F(SpecValidationTest, RequestFieldsAreChecked) {
  request_.set_nodes(-1);
  ExpectInvalid("nodes");
  request_.set_nodes(1);
  (*request_.mutable_labels())["bad key!"] = "x";
  ExpectInvalid("labels[bad key!]");
}

TEST_F(SpecValidationTest, UploadedFilesResolveToStorageKeys) {
  ASSERT_TRUE(scheduler_->storage().PutFile("files/f-1", data_).ok());
  v1::UploadHeader header;
  header.set_name("train.jsonl");
  header.set_size_bytes(static_cast<int64_t>(std::filesystem::file_size(data_)));
  header.set_sha256(std::string(64, 'b'));
  ASSERT_TRUE(scheduler_->AddFile("a", header, "files/f-1").ok());
  request_.mutable_spec()->mutable_data()->set_train("upload://f-1");
  auto job = Validate();
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->inputs[1].key(), "files/f-1");
  EXPECT_EQ(job->inputs[1].name(), "train.jsonl");
  // Another tenant cannot use it.
  auto other = ValidateCreateJob(
      request_, ValidationContext{scheduler_.get(), "b", dir_ / "cache", &inputs_, nullptr});
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace diablo::server::testing
