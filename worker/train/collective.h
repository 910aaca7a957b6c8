// Data parallelism: the ranks of one training run and the few collectives
// the trainer needs, through c10d (ProcessGroupNCCL on GPUs,
// ProcessGroupGloo on CPU), rendezvous by the torchrun environment
// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace diablo::train {

struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// Reads the torchrun variables; a missing WORLD_SIZE means one process.
// Throws std::invalid_argument for values that are not numbers or out of range.
DistributedEnv DistributedEnvFromEnvironment();

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Sums the tensors across ranks in place, as one flat buffer (one call,
  // however many tensors: adapter gradients are small and many).
  virtual void AllReduceSum(const std::vector<at::Tensor>& tensors) = 0;
  virtual void Barrier() = 0;
};

// One process: the collectives are identities.  For world_size > 1, joins the
// group (`device` "cpu" → Gloo, "cuda" → NCCL) with `timeout` per collective,
// so one dead rank fails the others in that time rather than hanging.
// Throws std::runtime_error when this build has no such backend or the
// rendezvous fails.
std::unique_ptr<Collective> JoinGroup(const DistributedEnv& env, const std::string& device,
                                      std::chrono::milliseconds timeout);

}  // namespace diablo::train
