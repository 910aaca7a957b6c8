// The shape every unary API method shares: time the call, authenticate the
// caller for a role, run the Scheduler call, map its status.
#pragma once

#include "server/grpc_status.h"
#include "server/services.h"

namespace diablo::server {

// Runs `call(principal)` (returning absl::StatusOr<Response>) for a caller
// authenticated as `role` and stores its value in `response`.
template <typename Response, typename Call>
grpc::Status Serve(const ServiceContext& ctx, grpc::ServerContext* context, const char* method,
                   Role role, Response* response, Call call) {
  CallTimer timer(ctx.metrics, method);
  absl::StatusOr<Principal> who = ctx.auth->Authenticate(*context, role);
  if (!who.ok()) return timer.Done(ToGrpc(who.status()));
  auto result = call(*who);
  if (!result.ok()) return timer.Done(ToGrpc(result.status()));
  *response = std::move(*result);
  return timer.Done(grpc::Status::OK);
}

// For calls whose Scheduler method returns a bare absl::Status.
template <typename Response>
absl::StatusOr<Response> Empty(const absl::Status& status) {
  if (!status.ok()) return status;
  return Response();
}

}  // namespace diablo::server
