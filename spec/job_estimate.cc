// OptionsForJob: the job's method, precision and batch shape, as the
// trainer will run them, in the estimator's terms.
#include "spec/job_estimate.h"

#include <algorithm>

namespace diablo::estimate {

EstimateOptions OptionsForJob(const train::TrainConfig& config, const ModelSource& source,
                              int world_size) {
  EstimateOptions options;
  // The config's enums are the estimator's (spec/fine_tune_method.h,
  // spec/precision.h).
  options.method = config.method.name;
  options.blocks = config.method.blocks;
  options.rank = config.method.rank;
  options.target_modules = config.method.target_modules;
  options.precision = config.precision;
  options.base_weights = config.base_weights;
  options.stored_weight_bytes = source.stored_weight_bytes;
  const train::OptimConfig& optim = config.optim;
  options.micro_batch = optim.micro_batch > 0
                            ? optim.micro_batch
                            : std::max<int64_t>(1, optim.global_batch / std::max(world_size, 1));
  options.seq_len = config.data.max_seq_len;
  options.gradient_checkpointing = config.gradient_checkpointing;
  return options;
}

uint64_t JobMemoryBytes(const train::TrainConfig& config, int world_size) {
  const ModelSource source = ReadModelSource(config.model);
  return EstimateTraining(source.config, OptionsForJob(config, source, world_size)).memory.total;
}

}  // namespace diablo::estimate
