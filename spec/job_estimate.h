// The estimate of a job as its training configuration describes it: which
// spec/estimate.h options a TrainConfig implies, held once so that the
// scheduler (at submit) and a worker (capping its trainer's memory) compute
// the same number for the same job.
#pragma once

#include "spec/estimate.h"
#include "spec/model_source.h"
#include "spec/train_config.h"

namespace diablo::estimate {

// The options of `config` for the model read from `source`, one rank of
// `world_size` (which share optim.global_batch when optim.micro_batch is 0).
EstimateOptions OptionsForJob(const train::TrainConfig& config, const ModelSource& source,
                              int world_size);

// Bytes one rank of the job needs by spec/estimate.h.  Reads the model's
// config or GGUF header at config.model; throws as ReadModelSource and
// EstimateTraining do (std::invalid_argument, model::FormatError).
uint64_t JobMemoryBytes(const train::TrainConfig& config, int world_size);

}  // namespace diablo::estimate
