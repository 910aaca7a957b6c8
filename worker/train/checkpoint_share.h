// Resuming a run whose ranks do not share a file system: only rank 0 writes
// checkpoints (checkpoint.h), so a rank on another node has none of its own.
// Before anyone loads, rank 0 names the checkpoint it resumes from and every
// rank that lacks that checkpoint (same name, same files, same sizes)
// receives rank 0's files through the collective and writes them into its own
// output_dir, so each node gets exactly the checkpoint it needs.
#pragma once

#include <c10/core/Device.h>

#include <string>

#include "worker/train/collective.h"

namespace diablo::train {

// `rank0_path`: the checkpoint rank 0 resumes from ("" on other ranks, whose
// choice does not count), or the error that prevented rank 0 from choosing
// one (`rank0_error`, which every rank then throws as std::invalid_argument,
// so no rank waits for a checkpoint that will not come).  Returns the path of
// the same checkpoint on this rank.  Tensors for the transfer live on
// `device` (NCCL moves CUDA memory only).  Throws CollectiveError when a
// rank stops answering, std::runtime_error when a file cannot be written.
std::string ShareCheckpoint(Collective& collective, const std::string& rank0_path,
                            const std::string& rank0_error, const std::string& output_dir,
                            at::Device device);

}  // namespace diablo::train
