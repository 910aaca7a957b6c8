// Registration, heartbeats and the lease loop.
#include "worker/agent/agent.h"

#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/rpc_client.h"
#include "diablo/build_info.h"

namespace diablo::agent {

Agent::Agent(AgentSettings settings) : settings_(std::move(settings)) {}

Agent::~Agent() {
  Shutdown();
  std::lock_guard<std::mutex> lock(mu_);
  for (Running& r : running_)
    if (r.thread.joinable()) r.thread.join();
}

void Agent::Shutdown() {
  if (shutdown_.exchange(true)) return;
  // First tell the scheduler to place nothing new here, so the attempts
  // stopped below are retried on other workers.
  v1::HeartbeatRequest request;
  request.set_draining(true);
  WorkerIdentity identity;
  {
    std::lock_guard<std::mutex> lock(mu_);
    identity = identity_;
    request.set_worker_id(identity.worker_id);
    for (const Running& r : running_)
      if (!r.runner->done()) request.add_running_fences(r.runner->fence());
  }
  if (stub_ != nullptr && !request.worker_id().empty()) {
    v1::HeartbeatResponse response;
    auto context = identity.NewCall(settings_.rpc, std::chrono::seconds(5));
    (void)stub_->Heartbeat(context.get(), request, &response);
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (Running& r : running_)
    if (!r.runner->done())
      r.runner->Stop("worker " + settings_.name + " is shutting down", /*report=*/true);
}

absl::Status Agent::Register() {
  v1::RegisterWorkerRequest request;
  request.set_name(settings_.name);
  request.set_host(settings_.host);
  request.set_devices(settings_.devices);
  request.set_device_kind(settings_.devices > 0 ? "cuda" : "cpu");
  request.set_memory_bytes(settings_.memory_bytes);
  request.set_version(kVersion);
  for (int attempt = 0; !shutdown_; ++attempt) {
    v1::RegisterWorkerResponse response;
    auto context = NewCallContext(settings_.rpc);
    grpc::Status status = stub_->RegisterWorker(context.get(), request, &response);
    if (status.ok()) {
      {
        std::lock_guard<std::mutex> lock(mu_);  // Shutdown() reads it from the signal thread
        identity_ = {response.worker_id(), response.credential()};
      }
      heartbeat_interval_s_ = response.heartbeat_interval_s();
      const std::string storage_uri =
          settings_.storage_override.empty() ? response.storage_uri() : settings_.storage_override;
      absl::StatusOr<std::unique_ptr<ObjectStore>> storage = OpenObjectStore(storage_uri);
      if (!storage.ok()) return storage.status();
      storage_ = std::move(*storage);
      std::fprintf(stderr, "diablo-worker: registered as %s (%s) with %s; storage %s\n",
                   response.worker_id().c_str(), settings_.name.c_str(),
                   settings_.rpc.server.c_str(), storage_uri.c_str());
      return absl::OkStatus();
    }
    if (!IsTransient(status))
      return absl::Status(
          static_cast<absl::StatusCode>(status.error_code()),
          absl::StrCat("registering with ", settings_.rpc.server, ": ", status.error_message()));
    if (attempt % 10 == 0)
      std::fprintf(stderr, "diablo-worker: scheduler %s not reachable (%s); retrying\n",
                   settings_.rpc.server.c_str(), status.error_message().c_str());
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  return absl::CancelledError("shut down before registering");
}

WorkerIdentity Agent::Identity() {
  std::lock_guard<std::mutex> lock(mu_);
  return identity_;
}

int Agent::FreeSlots() {
  std::lock_guard<std::mutex> lock(mu_);
  int used = 0;
  for (const Running& r : running_)
    if (!r.runner->done()) used += r.runner->lease().local_ranks();
  return std::max(settings_.devices, 1) - used;
}

void Agent::ReapFinished() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = running_.begin(); it != running_.end();) {
    if (it->runner->done()) {
      it->thread.join();
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
}

bool Agent::AnyRunning() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Running& r : running_)
    if (!r.runner->done()) return true;
  return false;
}

void Agent::HeartbeatLoop() {
  // Beyond a shutdown, too, while trainers still write their checkpoints and
  // report: the lease must outlive them.
  const WorkerIdentity identity = Identity();
  while (!shutdown_ || AnyRunning()) {
    v1::HeartbeatRequest request;
    request.set_worker_id(identity.worker_id);
    request.set_draining(shutdown_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const Running& r : running_)
        if (!r.runner->done()) request.add_running_fences(r.runner->fence());
    }
    v1::HeartbeatResponse response;
    auto context = identity.NewCall(settings_.rpc, std::chrono::seconds(10));
    grpc::Status status = stub_->Heartbeat(context.get(), request, &response);
    if (status.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      for (int64_t fence : response.stop_fences())
        for (Running& r : running_)
          if (r.runner->fence() == fence)
            r.runner->Stop("the scheduler cancelled or reassigned the attempt");
      if (!response.known()) {
        std::fprintf(
            stderr,
            "diablo-worker: the scheduler no longer knows this worker; registering again\n");
        for (Running& r : running_) r.runner->Stop("this worker lost its lease");
        must_register_ = true;
        return;
      }
    } else if (status.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
               status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
      // Revoked (this worker or its token): nothing this agent does will
      // change that, so it stops its trainers and exits for the operator.
      std::fprintf(stderr, "diablo-worker: heartbeat refused: %s; stopping\n",
                   status.error_message().c_str());
      std::lock_guard<std::mutex> lock(mu_);
      fatal_ = absl::PermissionDeniedError(
          absl::StrCat("the scheduler refused this worker: ", status.error_message()));
      for (Running& r : running_) r.runner->Stop("this worker was refused by the scheduler");
      shutdown_ = true;
      return;
    } else if (!IsTransient(status)) {
      std::fprintf(stderr, "diablo-worker: heartbeat refused: %s\n",
                   status.error_message().c_str());
    }
    const auto wait = std::chrono::milliseconds(static_cast<int64_t>(heartbeat_interval_s_ * 1000));
    for (auto slept = std::chrono::milliseconds(0); slept < wait && (!shutdown_ || AnyRunning());
         slept += std::chrono::milliseconds(50))
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

absl::Status Agent::Run() {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeChannel(settings_.rpc);
  if (!channel.ok()) return channel.status();
  channel_ = *channel;
  stub_ = v1::WorkerService::NewStub(channel_);
  while (!shutdown_) {
    if (absl::Status registered = Register(); !registered.ok())
      return shutdown_ ? absl::OkStatus() : registered;
    must_register_ = false;
    std::thread heartbeats([this] { HeartbeatLoop(); });
    while (!shutdown_ && !must_register_) {
      ReapFinished();
      if (FreeSlots() <= 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        continue;
      }
      const WorkerIdentity identity = Identity();
      v1::LeaseJobRequest request;
      request.set_worker_id(identity.worker_id);
      request.set_wait_ms(settings_.lease_wait_ms);
      v1::LeaseJobResponse response;
      auto context = identity.NewCall(settings_.rpc,
                                      std::chrono::milliseconds(settings_.lease_wait_ms + 5000));
      grpc::Status status = stub_->LeaseJob(context.get(), request, &response);
      if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
        must_register_ = true;  // the scheduler expired this worker
        break;
      }
      if (!status.ok()) {
        if (!IsTransient(status))
          std::fprintf(stderr, "diablo-worker: lease: %s\n", status.error_message().c_str());
        std::this_thread::sleep_for(std::chrono::seconds(1));
        continue;
      }
      if (!response.has_lease()) continue;
      auto runner =
          std::make_unique<AttemptRunner>(settings_, identity, *stub_, *storage_, response.lease());
      AttemptRunner* raw = runner.get();
      std::lock_guard<std::mutex> lock(mu_);
      running_.push_back({std::move(runner), std::thread([raw] { raw->Run(); })});
    }
    // Wait for the trainers (stopping after a shutdown or a lost lease) to
    // exit and their attempts to be reported, heartbeating meanwhile.
    while (true) {
      ReapFinished();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (running_.empty()) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    heartbeats.join();
  }
  std::lock_guard<std::mutex> lock(mu_);
  return fatal_;
}

}  // namespace diablo::agent
