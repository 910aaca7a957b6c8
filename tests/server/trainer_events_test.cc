// The trainer's event stream (spec/trainer_events.h) as the scheduler applies
// it: every kind of the contract, with every field its readers rely on,
// arrives in the job's record and events with the values the trainer wrote.
// The trainer's side (every event it writes is of the contract) is checked
// in tests/worker/train/trainer_test.cc.
#include "spec/trainer_events.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/server/scheduler_test_util.h"

namespace diablo::server {
namespace {

using nlohmann::json;
namespace field = events::field;

class TrainerEventsTest : public testing::SchedulerFixture {
 protected:
  void SetUp() override {
    SchedulerFixture::SetUp();
    worker_ = Register("w1");
    job_ = Create();
    auto lease = Lease(worker_);
    ASSERT_TRUE(lease.has_value());
    lease_ = *lease;
  }

  // An event of `kind` with every required field set to a value that tells
  // the fields apart (integers from 11 up, numbers from 0.5 up).
  static json Complete(events::Kind kind) {
    json event = {{field::kEvent, events::KindName(kind)}, {field::kTime, 1700000000.5}};
    int64_t next_integer = 11;
    double next_number = 0.5;
    for (const events::Field& f : events::RequiredFields(kind)) {
      switch (f.type) {
        case events::Type::kInteger:
          event[f.name] = next_integer++;
          break;
        case events::Type::kNumber:
          event[f.name] = next_number;
          next_number += 0.25;
          break;
        case events::Type::kString:
          event[f.name] = std::string("text of ") + f.name;
          break;
        case events::Type::kBoolean:
          event[f.name] = true;
          break;
      }
    }
    return event;
  }

  void Apply(const json& event) {
    auto reported = Report(lease_.fence(), event.dump());
    ASSERT_TRUE(reported.ok()) << reported.status() << " for " << event.dump();
  }

  v1::JobEvent LastEvent() {
    std::vector<v1::JobEvent> all = Events(job_.id());
    EXPECT_FALSE(all.empty());
    return all.empty() ? v1::JobEvent() : all.back();
  }

  std::string worker_;
  v1::Job job_;
  v1::Lease lease_;
};

TEST_F(TrainerEventsTest, EveryKindIsAppliedAsItselfNeverAsARawLine) {
  for (events::Kind kind : events::kAllKinds) {
    SCOPED_TRACE(std::string(events::KindName(kind)));
    json event = Complete(kind);
    if (kind == events::Kind::kCheckpoint)
      event[field::kKey] = lease_.output_prefix() + "/checkpoints/step-11";
    Apply(event);
    for (const v1::JobEvent& e : Events(job_.id()))
      EXPECT_FALSE(e.has_log() && e.log().line() == event.dump())
          << "the scheduler did not recognise the event and kept the raw line";
  }
}

TEST_F(TrainerEventsTest, StartedMovesTheJobToRunningWithItsStepCount) {
  Apply(Complete(events::Kind::kStarted));
  auto job = scheduler_->GetJob("a", job_.id());
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job->total_steps(), 11);
  EXPECT_TRUE(AnyStateReasonContains(job_.id(), "resumed at step 12"));
}

TEST_F(TrainerEventsTest, StepMetricsArriveUnchanged) {
  const json step = Complete(events::Kind::kStep);
  Apply(step);
  const v1::JobEvent e = LastEvent();
  ASSERT_TRUE(e.has_step());
  EXPECT_EQ(e.step().step(), step[field::kStep].get<int64_t>());
  EXPECT_EQ(e.step().total_steps(), step[field::kTotalSteps].get<int64_t>());
  EXPECT_DOUBLE_EQ(e.step().epoch(), step[field::kEpoch].get<double>());
  EXPECT_DOUBLE_EQ(e.step().loss(), step[field::kLoss].get<double>());
  EXPECT_DOUBLE_EQ(e.step().lr(), step[field::kLr].get<double>());
  EXPECT_DOUBLE_EQ(e.step().grad_norm(), step[field::kGradNorm].get<double>());
  EXPECT_DOUBLE_EQ(e.step().tokens_per_s(), step[field::kTokensPerS].get<double>());
  EXPECT_DOUBLE_EQ(e.step().eta_s(), step[field::kEtaS].get<double>());
  EXPECT_DOUBLE_EQ(e.time(), step[field::kTime].get<double>());
  auto job = scheduler_->GetJob("a", job_.id());
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->step(), step[field::kStep].get<int64_t>());
  EXPECT_DOUBLE_EQ(job->loss(), step[field::kLoss].get<double>());
  EXPECT_EQ(job->peak_rss_bytes(), step[field::kPeakRssBytes].get<int64_t>());
}

TEST_F(TrainerEventsTest, EvalResultArrivesUnchanged) {
  const json eval = Complete(events::Kind::kEval);
  Apply(eval);
  const v1::JobEvent e = LastEvent();
  ASSERT_TRUE(e.has_eval());
  EXPECT_EQ(e.eval().step(), eval[field::kStep].get<int64_t>());
  EXPECT_DOUBLE_EQ(e.eval().loss(), eval[field::kLoss].get<double>());
  EXPECT_DOUBLE_EQ(e.eval().perplexity(), eval[field::kPerplexity].get<double>());
  EXPECT_EQ(e.eval().examples(), eval[field::kExamples].get<int64_t>());
  auto job = scheduler_->GetJob("a", job_.id());
  ASSERT_TRUE(job.ok());
  EXPECT_DOUBLE_EQ(job->eval_loss(), eval[field::kLoss].get<double>());
}

TEST_F(TrainerEventsTest, AnUploadedCheckpointIsRecordedWithItsKey) {
  json checkpoint = Complete(events::Kind::kCheckpoint);
  const std::string key = lease_.output_prefix() + "/checkpoints/step-11";
  checkpoint[field::kKey] = key;
  Apply(checkpoint);
  const v1::JobEvent e = LastEvent();
  ASSERT_TRUE(e.has_checkpoint());
  EXPECT_EQ(e.checkpoint().step(), checkpoint[field::kStep].get<int64_t>());
  EXPECT_EQ(e.checkpoint().key(), key);
  EXPECT_TRUE(e.checkpoint().final());
}

TEST_F(TrainerEventsTest, StoppedAndFinishedAreLoggedWithTheirFigures) {
  const json stopped = Complete(events::Kind::kStopped);
  Apply(stopped);
  v1::JobEvent e = LastEvent();
  ASSERT_TRUE(e.has_log());
  EXPECT_THAT(e.log().line(), ::testing::HasSubstr("stopped at step 11 of 12"));
  EXPECT_THAT(e.log().line(), ::testing::HasSubstr(stopped[field::kMessage].get<std::string>()));

  Apply(Complete(events::Kind::kFinished));
  e = LastEvent();
  ASSERT_TRUE(e.has_log());
  EXPECT_THAT(e.log().line(), ::testing::HasSubstr("finished at step 11, loss 0.5000"));
}

TEST_F(TrainerEventsTest, EveryErrorCodeIsLoggedAndCountedUnderItsName) {
  for (events::ErrorCode code : events::kAllErrorCodes) {
    json error = Complete(events::Kind::kError);
    error[field::kCode] = events::ErrorCodeName(code);
    Apply(error);
    const v1::JobEvent e = LastEvent();
    ASSERT_TRUE(e.has_log());
    EXPECT_THAT(e.log().line(), ::testing::HasSubstr(std::string("error (") +
                                                     std::string(events::ErrorCodeName(code)) +
                                                     "): text of message"));
  }
  auto snapshot = scheduler_->TakeSnapshot(0);
  ASSERT_TRUE(snapshot.ok());
  for (events::ErrorCode code : events::kAllErrorCodes)
    EXPECT_EQ(snapshot->trainer_errors[std::string(events::ErrorCodeName(code))], 1)
        << events::ErrorCodeName(code);
}

TEST_F(TrainerEventsTest, CodesOutsideTheContractCountAsFailed) {
  json error = Complete(events::Kind::kError);
  error[field::kCode] = "made_up_by_a_hostile_worker";
  Apply(error);
  auto snapshot = scheduler_->TakeSnapshot(0);
  ASSERT_TRUE(snapshot.ok());
  EXPECT_EQ(snapshot->trainer_errors.count("made_up_by_a_hostile_worker"), 0u);
  EXPECT_EQ(snapshot->trainer_errors["failed"], 1);
}

TEST(TrainerEventContract, NamesRoundTripAndOnlyInputErrorsArePermanent) {
  for (events::Kind kind : events::kAllKinds)
    EXPECT_EQ(events::ParseKind(events::KindName(kind)), kind);
  EXPECT_EQ(events::ParseKind("log"), std::nullopt);
  for (events::ErrorCode code : events::kAllErrorCodes)
    EXPECT_EQ(events::ParseErrorCode(events::ErrorCodeName(code)), code);
  EXPECT_EQ(events::ParseErrorCode("something_new"), events::ErrorCode::kFailed);
  EXPECT_TRUE(events::IsPermanent(events::ErrorCode::kBadConfig));
  EXPECT_TRUE(events::IsPermanent(events::ErrorCode::kNonFinite));
  EXPECT_TRUE(events::IsPermanent(events::ErrorCode::kOutOfMemory));
  EXPECT_FALSE(events::IsPermanent(events::ErrorCode::kInterrupted))
      << "an interrupted run resumes from its checkpoint";
  EXPECT_FALSE(events::IsPermanent(events::ErrorCode::kFailed));
}

}  // namespace
}  // namespace diablo::server
