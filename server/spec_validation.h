// Validation of a CreateJob request before anything is written: the request's
// own fields, the spec through the trainer's own config parser, every input
// (uploaded file, object URI or shared path), the method's settings against
// the model via the estimator, and every line of each dataset
// (server/submit_datasets.h).  Errors are INVALID_ARGUMENT naming the field
// ("spec.optim.lr: must be a number").
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/input_policy.h"
#include "diablo/v1/job.pb.h"
#include "server/scheduler.h"
#include "server/submit_checks.h"

namespace diablo::server {

struct ValidationContext {
  Scheduler* scheduler = nullptr;
  std::string tenant;
  // The submit cache: copies of models stored as objects, read for their
  // shape and tokenizer.
  std::filesystem::path cache_dir;
  // What the tenant may name besides its uploads; null grants nothing.
  const InputPolicy* inputs = nullptr;
  // What the checks may cost and keep (the server's, opened with its flags);
  // null: SubmitChecks::For(cache_dir), the defaults, for tools and tests.
  std::shared_ptr<SubmitChecks> checks;
};

absl::StatusOr<ValidatedJob> ValidateCreateJob(const v1::CreateJobRequest& request,
                                               const ValidationContext& context);

// What the job needs of each node, from the request and the validated job.
Requirements RequirementsOf(const v1::CreateJobRequest& request, const ValidatedJob& job);

}  // namespace diablo::server
