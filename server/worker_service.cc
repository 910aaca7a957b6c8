// WorkerService (agents) and FleetService (operators): pass-throughs to the
// Scheduler.  Worker calls need a worker-role token and, after
// RegisterWorker, the credential of a registration made with that token;
// they may act only as that worker.
#include "absl/strings/str_cat.h"
#include "common/rpc_client.h"
#include "common/status_macros.h"
#include "server/grpc_status.h"
#include "server/serve.h"

namespace diablo::server {
namespace {

std::string_view CredentialOf(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kWorkerCredentialMetadata);
  if (it == metadata.end()) return {};
  return std::string_view(it->second.data(), it->second.size());
}

// Runs `call(worker_id)` for the worker whose credential the call carries.
template <typename Response, typename Call>
grpc::Status ServeWorker(const ServiceContext& ctx, grpc::ServerContext* context,
                         const char* method, Response* response, Call call) {
  return Serve(ctx, context, method, Role::kWorker, response,
               [&](const Principal& who) -> absl::StatusOr<Response> {
                 ASSIGN_OR_RETURN(std::string worker_id, ctx.scheduler->AuthenticateWorker(
                                                             who.token_id, CredentialOf(*context)));
                 return call(worker_id);
               });
}

absl::Status CheckSameWorker(const std::string& named, const std::string& caller) {
  if (named == caller) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat("worker_id \"", named, "\": this call's credential belongs to worker ", caller));
}

}  // namespace

grpc::Status WorkerServiceImpl::RegisterWorker(grpc::ServerContext* context,
                                               const v1::RegisterWorkerRequest* request,
                                               v1::RegisterWorkerResponse* response) {
  return Serve(ctx_, context, "RegisterWorker", Role::kWorker, response, [&](const Principal& who) {
    return ctx_.scheduler->RegisterWorker(*request, who.token_id);
  });
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* context,
                                          const v1::HeartbeatRequest* request,
                                          v1::HeartbeatResponse* response) {
  return ServeWorker(ctx_, context, "Heartbeat", response,
                     [&](const std::string& worker_id) -> absl::StatusOr<v1::HeartbeatResponse> {
                       RETURN_IF_ERROR(CheckSameWorker(request->worker_id(), worker_id));
                       return ctx_.scheduler->Heartbeat(*request);
                     });
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
  return ServeWorker(ctx_, context, "LeaseJob", response,
                     [&](const std::string& worker_id) -> absl::StatusOr<v1::LeaseJobResponse> {
                       RETURN_IF_ERROR(CheckSameWorker(request->worker_id(), worker_id));
                       return ctx_.scheduler->LeaseJob(bounded);
                     });
}

grpc::Status WorkerServiceImpl::ReportEvents(grpc::ServerContext* context,
                                             const v1::ReportEventsRequest* request,
                                             v1::ReportEventsResponse* response) {
  return ServeWorker(ctx_, context, "ReportEvents", response,
                     [&](const std::string& worker_id) -> absl::StatusOr<v1::ReportEventsResponse> {
                       RETURN_IF_ERROR(ctx_.scheduler->CheckLeasedTo(worker_id, request->fence(),
                                                                     request->rank()));
                       return ctx_.scheduler->ReportEvents(*request);
                     });
}

grpc::Status WorkerServiceImpl::CompleteAttempt(grpc::ServerContext* context,
                                                const v1::CompleteAttemptRequest* request,
                                                v1::CompleteAttemptResponse* response) {
  return ServeWorker(
      ctx_, context, "CompleteAttempt", response,
      [&](const std::string& worker_id) -> absl::StatusOr<v1::CompleteAttemptResponse> {
        RETURN_IF_ERROR(
            ctx_.scheduler->CheckLeasedTo(worker_id, request->fence(), request->rank()));
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

grpc::Status FleetServiceImpl::RevokeWorker(grpc::ServerContext* context,
                                            const v1::RevokeWorkerRequest* request,
                                            v1::RevokeWorkerResponse* response) {
  return Serve(ctx_, context, "RevokeWorker", Role::kAdmin, response,
               [&](const Principal&) -> absl::StatusOr<v1::RevokeWorkerResponse> {
                 if (request->reason().size() > 1024)
                   return absl::InvalidArgumentError("reason: at most 1024 characters");
                 v1::RevokeWorkerResponse answer;
                 ASSIGN_OR_RETURN(
                     *answer.mutable_worker(),
                     ctx_.scheduler->RevokeWorker(request->worker_id(), request->reason()));
                 return answer;
               });
}

}  // namespace diablo::server
