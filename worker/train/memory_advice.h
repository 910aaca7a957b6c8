// What an out-of-memory error tells the user: the job's estimate (the same
// number `diablo estimate` and the scheduler give) and the settings of this
// job that would lower its memory, so the error is something to act on.
#pragma once

#include <string>

#include "spec/train_config.h"

namespace diablo::train {

// `where` is "host" or "device".  Never throws: an estimate that cannot be
// computed is left out.
std::string OutOfMemoryMessage(const TrainConfig& config, int world_size, const std::string& where);

// Whether a LibTorch error is a failed allocation.  The CPU allocator throws
// a plain c10::Error (the OutOfMemoryError type is reserved for devices), so
// its message is all there is to go by.
bool IsAllocationFailure(const std::string& message);

}  // namespace diablo::train
