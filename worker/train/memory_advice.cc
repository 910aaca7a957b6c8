#include "worker/train/memory_advice.h"

#include <cstdio>
#include <vector>

#include "spec/job_estimate.h"

namespace diablo::train {
namespace {

std::string GiB(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f GiB", static_cast<double>(bytes) / (1ull << 30));
  return text;
}

}  // namespace

std::string OutOfMemoryMessage(const TrainConfig& config, int world_size,
                               const std::string& where) {
  std::string message = "out of " + where + " memory with micro_batch " +
                        (config.optim.micro_batch > 0 ? std::to_string(config.optim.micro_batch)
                                                      : std::string("global_batch/ranks")) +
                        " and max_seq_len " + std::to_string(config.data.max_seq_len);
  try {
    message += "; the estimate for this job is " +
               GiB(estimate::JobMemoryBytes(config, world_size)) +
               " per rank (see `diablo estimate`), and the run needed more than was free";
  } catch (...) {
    // The advice below holds without the number.
  }
  std::vector<std::string> helps = {
      "lower optim.micro_batch (gradient accumulation keeps the global batch)",
      "lower data.max_seq_len"};
  if (!config.gradient_checkpointing) helps.push_back("set gradient_checkpointing: true");
  if (config.base_weights == BaseWeights::kDense && config.model.size() >= 5 &&
      config.model.compare(config.model.size() - 5, 5, ".gguf") == 0)
    helps.push_back("set base_weights: packed (the GGUF's Q4/Q8 blocks stay packed)");
  if (config.precision == Precision::kFp32 && config.method.name != TrainMethod::kFull)
    helps.push_back("set precision: bf16");
  message += ". To fit: ";
  for (size_t i = 0; i < helps.size(); ++i)
    message += (i == 0 ? "" : i + 1 == helps.size() ? ", or " : ", ") + helps[i];
  return message + ". Retrying the same settings fails the same way";
}

bool IsAllocationFailure(const std::string& message) {
  return message.find("DefaultCPUAllocator: can't allocate memory") != std::string::npos ||
         message.find("DefaultCPUAllocator: not enough memory") != std::string::npos ||
         message.find("CUDA out of memory") != std::string::npos;
}

}  // namespace diablo::train
