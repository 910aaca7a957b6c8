// c10d process groups behind the small Collective interface, so only this
// file pulls in the distributed headers.
#include "worker/train/collective.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#ifdef DIABLO_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef DIABLO_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace diablo::train {
namespace {

int EnvInt(const char* name, int fallback, int min, int max) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value < min || value > max)
    throw std::invalid_argument(std::string("environment ") + name + "=" + text +
                                ": expected an integer in [" + std::to_string(min) + ", " +
                                std::to_string(max) + "]");
  return static_cast<int>(value);
}

class SingleProcess : public Collective {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void AllReduceSum(const std::vector<at::Tensor>&) override {}
  void Broadcast(const at::Tensor&, int) override {}
  void Barrier() override {}
};

class ProcessGroupCollective : public Collective {
 public:
  ProcessGroupCollective(c10::intrusive_ptr<c10d::Backend> backend, int rank, int world,
                         std::chrono::milliseconds timeout)
      : backend_(std::move(backend)), rank_(rank), world_(world), timeout_(timeout) {}
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  void AllReduceSum(const std::vector<at::Tensor>& tensors) override {
    if (tensors.empty()) return;
    std::vector<at::Tensor> flat_parts;
    flat_parts.reserve(tensors.size());
    for (const at::Tensor& t : tensors) flat_parts.push_back(t.reshape({-1}));
    std::vector<at::Tensor> buffer{at::cat(flat_parts)};
    Complete("the gradient all-reduce", [&] { return backend_->allreduce(buffer); });
    int64_t offset = 0;
    for (const at::Tensor& t : tensors) {
      const int64_t n = t.numel();
      t.copy_(buffer[0].narrow(0, offset, n).view(t.sizes()));
      offset += n;
    }
  }
  void Broadcast(const at::Tensor& tensor, int root) override {
    std::vector<at::Tensor> buffer{tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    Complete("a broadcast", [&] { return backend_->broadcast(buffer, options); });
  }
  void Barrier() override {
    Complete("a barrier", [&] { return backend_->barrier(); });
  }

 private:
  // Starts a collective and waits for it; a failure (a timeout, above all)
  // becomes a CollectiveError that says what the user can do about it.
  template <typename Start>
  void Complete(const char* what, Start start) {
    try {
      start()->wait();
    } catch (const c10::Error& e) {  // what() would carry a C++ backtrace
      Fail(what, e.what_without_backtrace());
    } catch (const std::exception& e) {  // Gloo's own, e.g. gloo::IoException
      Fail(what, e.what());
    }
  }

  [[noreturn]] void Fail(const char* what, std::string detail) const {
    if (const size_t eol = detail.find('\n'); eol != std::string::npos) detail.resize(eol);
    throw CollectiveError(
        "rank " + std::to_string(rank_) + " of " + std::to_string(world_) + ": " + what +
        " failed: another rank exited, or did not answer within collective_timeout_s (" +
        std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout_).count()) +
        " s) (" + detail + "). The run resumes from its last checkpoint when restarted");
  }

  c10::intrusive_ptr<c10d::Backend> backend_;
  int rank_, world_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

DistributedEnv DistributedEnvFromEnvironment() {
  DistributedEnv env;
  env.world_size = EnvInt("WORLD_SIZE", 1, 1, 1 << 16);
  env.rank = EnvInt("RANK", 0, 0, env.world_size - 1);
  env.local_rank = EnvInt("LOCAL_RANK", env.rank, 0, 1 << 16);
  env.local_world_size = EnvInt("LOCAL_WORLD_SIZE", 1, 1, 1 << 16);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0')
    env.master_addr = addr;
  env.master_port = EnvInt("MASTER_PORT", 29500, 1, 65535);
  return env;
}

std::unique_ptr<Collective> JoinGroup(const DistributedEnv& env, at::Device device,
                                      const std::string& backend, bool shared_device,
                                      std::chrono::milliseconds timeout) {
  if (env.world_size == 1 && backend == "auto") return std::make_unique<SingleProcess>();
  const bool nccl = backend == "nccl" || (backend == "auto" && device.is_cuda() && !shared_device);
  if (nccl && !device.is_cuda())
    throw std::invalid_argument("collective_backend nccl needs CUDA tensors; this rank runs on " +
                                device.str());
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(env.master_port);
  options.isServer = env.rank == 0;
  options.numWorkers = env.world_size;
  options.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
  } catch (const std::exception& e) {
    throw std::runtime_error("rendezvous at " + env.master_addr + ":" +
                             std::to_string(env.master_port) + " failed (rank " +
                             std::to_string(env.rank) + "): " + e.what());
  }
  if (nccl) {
#ifdef DIABLO_WITH_NCCL
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env.rank, env.world_size, opts);
    // Bound before the first collective: NCCL then creates its communicator
    // on this rank's device, never on device 0 by default.
    nccl->setBoundDeviceId(device);
    return std::make_unique<ProcessGroupCollective>(std::move(nccl), env.rank, env.world_size,
                                                    timeout);
#else
    throw std::runtime_error(
        "this build of diablo has no NCCL process group; build against a CUDA LibTorch");
#endif
  }
#ifdef DIABLO_WITH_GLOO
  auto opts = c10d::ProcessGroupGloo::Options::create();
  opts->timeout = timeout;
  opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  return std::make_unique<ProcessGroupCollective>(
      c10::make_intrusive<c10d::ProcessGroupGloo>(store, env.rank, env.world_size, opts), env.rank,
      env.world_size, timeout);
#else
  throw std::runtime_error(
      "this build of diablo has no Gloo process group (the gloo headers were not found at build "
      "time: install libgloo-dev), so CPU data parallelism is unavailable");
#endif
}

}  // namespace diablo::train
