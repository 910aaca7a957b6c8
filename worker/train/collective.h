// Data parallelism: the ranks of one training run and the few collectives
// the trainer needs, through c10d (ProcessGroupNCCL on GPUs,
// ProcessGroupGloo on CPU), rendezvous by the torchrun environment
// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace diablo::train {

struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;  // ranks on this machine
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
  // Replaces every rank's `tensor` with rank `root`'s, in place.
  virtual void Broadcast(const at::Tensor& tensor, int root) = 0;
  virtual void Barrier() = 0;
};

// A collective that did not complete: a rank stopped answering (SIGSTOP, a
// hung device), exited, or the network failed.  The run cannot go on; the
// attempt fails and may resume from its last checkpoint on a new gang.
class CollectiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// `backend` "auto": one process needs no group and gets identities; several
// join Gloo on CPU, NCCL (bound to `device`) on GPUs, Gloo on GPUs when
// `shared_device` (NCCL refuses two ranks on one GPU).  "nccl" or "gloo":
// that group, even for one rank.  `timeout` applies to every collective, so
// one silent rank fails the others in that time rather than hanging them; a
// collective that fails throws CollectiveError.  Throws std::runtime_error
// when this build has no such backend or the rendezvous fails.
std::unique_ptr<Collective> JoinGroup(const DistributedEnv& env, at::Device device,
                                      const std::string& backend, bool shared_device,
                                      std::chrono::milliseconds timeout);

}  // namespace diablo::train
