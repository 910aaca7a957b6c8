// JobService: submit, read, list, cancel, watch, and download artifacts.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/grpc_status.h"
#include "server/serve.h"
#include "server/spec_validation.h"

namespace diablo::server {
namespace {

constexpr int64_t kChunkBytes = 1 << 20;
constexpr int kWatchBatch = 256;

}  // namespace

grpc::Status JobServiceImpl::CreateJob(grpc::ServerContext* context,
                                       const v1::CreateJobRequest* request, v1::Job* response) {
  return Serve(ctx_, context, "CreateJob", Role::kUser, response,
               [&](const Principal& who) -> absl::StatusOr<v1::Job> {
                 if (!request->idempotency_key().empty()) {
                   absl::StatusOr<v1::Job> existing =
                       ctx_.scheduler->FindByIdempotencyKey(who.tenant, *request);
                   if (existing.ok() || existing.status().code() != absl::StatusCode::kNotFound)
                     return existing;
                 }
                 ValidationContext validation{ctx_.scheduler, who.tenant, ctx_.data_dir / "cache",
                                              ctx_.inputs, ctx_.submit_checks};
                 absl::StatusOr<ValidatedJob> job = ValidateCreateJob(*request, validation);
                 if (!job.ok()) return job.status();
                 if (!request->queue_anyway()) {
                   absl::Status placeable =
                       ctx_.scheduler->CheckPlaceable(RequirementsOf(*request, *job));
                   if (!placeable.ok()) return placeable;
                 }
                 return ctx_.scheduler->CreateJob(who.tenant, *request, *job);
               });
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                                    v1::Job* response) {
  return Serve(ctx_, context, "GetJob", Role::kUser, response, [&](const Principal& who) {
    return ctx_.scheduler->GetJob(who.tenant, request->id());
  });
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* context,
                                      const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  return Serve(ctx_, context, "ListJobs", Role::kUser, response, [&](const Principal& who) {
    return ctx_.scheduler->ListJobs(who.tenant, *request);
  });
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* context,
                                       const v1::CancelJobRequest* request, v1::Job* response) {
  return Serve(ctx_, context, "CancelJob", Role::kUser, response, [&](const Principal& who) {
    return ctx_.scheduler->CancelJob(who.tenant, request->id(), request->reason());
  });
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* context,
                                      const v1::WatchJobRequest* request,
                                      grpc::ServerWriter<v1::JobEvent>* writer) {
  CallTimer timer(ctx_.metrics, "WatchJob");
  absl::StatusOr<Principal> who = ctx_.auth->Authenticate(*context, Role::kUser);
  if (!who.ok()) return timer.Done(ToGrpc(who.status()));
  int64_t after = std::max<int64_t>(request->after_seq(), 0);
  while (!context->IsCancelled()) {
    if (ctx_.scheduler->stopping())
      return timer.Done(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                     "the scheduler is shutting down; watch again"));
    bool finished = false;
    absl::StatusOr<std::vector<v1::JobEvent>> events =
        ctx_.scheduler->EventsAfter(who->tenant, request->id(), after, kWatchBatch, &finished);
    if (!events.ok()) return timer.Done(ToGrpc(events.status()));
    for (const v1::JobEvent& event : *events) {
      if (!writer->Write(event))
        return timer.Done(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      after = event.seq();
    }
    if (finished || (!request->follow() && static_cast<int>(events->size()) < kWatchBatch))
      return timer.Done(grpc::Status::OK);
    // Wake on any change, and at least every second to notice a client that left.
    if (events->empty()) ctx_.scheduler->WaitForChange(1000);
  }
  return timer.Done(grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled the watch"));
}

grpc::Status JobServiceImpl::ListArtifacts(grpc::ServerContext* context,
                                           const v1::ListArtifactsRequest* request,
                                           v1::ListArtifactsResponse* response) {
  return Serve(ctx_, context, "ListArtifacts", Role::kUser, response,
               [&](const Principal& who) -> absl::StatusOr<v1::ListArtifactsResponse> {
                 absl::StatusOr<std::vector<ArtifactRow>> rows =
                     ctx_.scheduler->ListArtifacts(who.tenant, request->job_id());
                 if (!rows.ok()) return rows.status();
                 v1::ListArtifactsResponse list;
                 for (const ArtifactRow& row : *rows) {
                   v1::Artifact* artifact = list.add_artifacts();
                   artifact->set_name(row.name);
                   artifact->set_size_bytes(row.size_bytes);
                   artifact->set_sha256(row.sha256);
                 }
                 return list;
               });
}

grpc::Status JobServiceImpl::DownloadArtifact(grpc::ServerContext* context,
                                              const v1::DownloadArtifactRequest* request,
                                              grpc::ServerWriter<v1::DataChunk>* writer) {
  CallTimer timer(ctx_.metrics, "DownloadArtifact");
  absl::StatusOr<Principal> who = ctx_.auth->Authenticate(*context, Role::kUser);
  if (!who.ok()) return timer.Done(ToGrpc(who.status()));
  absl::StatusOr<std::vector<ArtifactRow>> rows =
      ctx_.scheduler->ListArtifacts(who->tenant, request->job_id());
  if (!rows.ok()) return timer.Done(ToGrpc(rows.status()));
  auto row = std::find_if(rows->begin(), rows->end(),
                          [&](const ArtifactRow& r) { return r.name == request->name(); });
  if (row == rows->end())
    return timer.Done(
        grpc::Status(grpc::StatusCode::NOT_FOUND,
                     absl::StrCat("job ", request->job_id(), " has no artifact \"", request->name(),
                                  "\" (ListArtifacts shows what it has)")));
  if (request->offset() < 0 || request->offset() > row->size_bytes)
    return timer.Done(
        grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                     absl::StrCat("offset ", request->offset(), " is outside the artifact (",
                                  row->size_bytes, " bytes)")));
  int64_t offset = request->offset();
  bool first = true;
  do {
    if (context->IsCancelled())
      return timer.Done(grpc::Status(grpc::StatusCode::CANCELLED, "download cancelled"));
    const int64_t length = std::min(kChunkBytes, row->size_bytes - offset);
    absl::StatusOr<std::string> data =
        ctx_.scheduler->storage().ReadRange(row->storage_key, offset, length);
    if (!data.ok()) return timer.Done(ToGrpc(data.status()));
    if (static_cast<int64_t>(data->size()) != length)
      return timer.Done(grpc::Status(
          grpc::StatusCode::DATA_LOSS,
          absl::StrCat("artifact ", row->name, " is shorter in storage than recorded")));
    v1::DataChunk chunk;
    if (first) {
      chunk.mutable_artifact()->set_name(row->name);
      chunk.mutable_artifact()->set_size_bytes(row->size_bytes);
      chunk.mutable_artifact()->set_sha256(row->sha256);
    }
    chunk.set_offset(offset);
    chunk.set_data(std::move(*data));
    offset += length;
    chunk.set_last(offset >= row->size_bytes);
    if (!writer->Write(chunk))
      return timer.Done(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
    first = false;
  } while (offset < row->size_bytes);
  return timer.Done(grpc::Status::OK);
}

}  // namespace diablo::server
