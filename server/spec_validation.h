// Validation of a CreateJob request before anything is written: the request's
// own fields, the spec through the trainer's own config parser, every input
// (uploaded file, object URI or shared path) and the method's settings against
// the model via the estimator.  Errors are INVALID_ARGUMENT naming the field
// ("spec.optim.lr: must be a number").
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"
#include "common/input_policy.h"
#include "diablo/v1/job.pb.h"
#include "server/scheduler.h"

namespace diablo::server {

struct ValidationContext {
  Scheduler* scheduler = nullptr;
  std::string tenant;
  // Where models stored as objects are cached to read their shape.
  std::filesystem::path cache_dir;
  // What the tenant may name besides its uploads; null grants nothing.
  const InputPolicy* inputs = nullptr;
};

absl::StatusOr<ValidatedJob> ValidateCreateJob(const v1::CreateJobRequest& request,
                                               const ValidationContext& context);

// What the job needs of each node, from the request and the validated job.
Requirements RequirementsOf(const v1::CreateJobRequest& request, const ValidatedJob& job);

}  // namespace diablo::server
