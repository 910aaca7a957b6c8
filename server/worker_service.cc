// WorkerService (agents) and FleetService (operators): pass-throughs to the
// Scheduler behind a worker-role (or any-role, for the fleet view) token.
#include "server/grpc_status.h"
#include "server/serve.h"

namespace diablo::server {

grpc::Status WorkerServiceImpl::RegisterWorker(grpc::ServerContext* context,
                                               const v1::RegisterWorkerRequest* request,
                                               v1::RegisterWorkerResponse* response) {
  return Serve(ctx_, context, "RegisterWorker", Role::kWorker, response,
               [&](const Principal&) { return ctx_.scheduler->RegisterWorker(*request); });
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* context,
                                          const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  return Serve(ctx_, context, "Heartbeat", Role::kWorker, response,
               [&](const Principal&) { return ctx_.scheduler->Heartbeat(*request); });
}

grpc::Status WorkerServiceImpl::LeaseJob(grpc::ServerContext* context,
                                         const v1::LeaseJobRequest* request,
                                         v1::LeaseJobResponse* response) {
  // A long poll never outlives the caller's deadline.
  v1::LeaseJobRequest bounded = *request;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      context->deadline() - std::chrono::system_clock::now());
  bounded.set_wait_ms(
      static_cast<int32_t>(std::clamp<int64_t>(left.count() - 500, 0, request->wait_ms())));
  return Serve(ctx_, context, "LeaseJob", Role::kWorker, response,
               [&](const Principal&) { return ctx_.scheduler->LeaseJob(bounded); });
}

grpc::Status WorkerServiceImpl::ReportEvents(grpc::ServerContext* context,
                                             const v1::ReportEventsRequest* request,
                                             v1::ReportEventsResponse* response) {
  return Serve(ctx_, context, "ReportEvents", Role::kWorker, response,
               [&](const Principal&) { return ctx_.scheduler->ReportEvents(*request); });
}

grpc::Status WorkerServiceImpl::CompleteAttempt(grpc::ServerContext* context,
                                                const v1::CompleteAttemptRequest* request,
                                                v1::CompleteAttemptResponse* response) {
  return Serve(ctx_, context, "CompleteAttempt", Role::kWorker, response, [&](const Principal&) {
    return Empty<v1::CompleteAttemptResponse>(ctx_.scheduler->CompleteAttempt(*request));
  });
}

grpc::Status FleetServiceImpl::ListWorkers(grpc::ServerContext* context,
                                           const v1::ListWorkersRequest*,
                                           v1::ListWorkersResponse* response) {
  CallTimer timer(ctx_.metrics, "ListWorkers");
  // Any valid token may see the fleet; a worker token is checked as a worker.
  absl::StatusOr<Principal> who = ctx_.auth->Authenticate(*context, Role::kUser);
  if (!who.ok() && who.status().code() == absl::StatusCode::kPermissionDenied)
    who = ctx_.auth->Authenticate(*context, Role::kWorker);
  if (!who.ok()) return timer.Done(ToGrpc(who.status()));
  absl::StatusOr<v1::ListWorkersResponse> workers =
      ctx_.scheduler->ListWorkers(who->tenant, who->role == Role::kAdmin);
  if (!workers.ok()) return timer.Done(ToGrpc(workers.status()));
  *response = std::move(*workers);
  return timer.Done(grpc::Status::OK);
}

}  // namespace diablo::server
