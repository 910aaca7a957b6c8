// Who this agent is to the scheduler for one registration: the worker id and
// the credential RegisterWorker returned.  Every WorkerService call after
// registering carries both the worker token and this credential; a new
// registration (after a lost lease or a scheduler that forgot the worker)
// makes a new identity, so each attempt keeps the one it was leased under.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/rpc_client.h"
#include "grpcpp/client_context.h"

namespace diablo::agent {

struct WorkerIdentity {
  std::string worker_id;
  std::string credential;

  // A call context with the token, this credential and a deadline.
  std::unique_ptr<grpc::ClientContext> NewCall(const RpcClientOptions& rpc,
                                               std::chrono::milliseconds timeout) const {
    auto context = NewCallContext(rpc, timeout);
    context->AddMetadata(kWorkerCredentialMetadata, credential);
    return context;
  }
};

}  // namespace diablo::agent
