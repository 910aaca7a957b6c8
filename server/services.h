// The gRPC services the scheduler hosts.  Each method authenticates the
// caller, checks its input, calls the Scheduler, and maps the result to a
// status code; none holds state of its own.
#pragma once

#include <filesystem>

#include "common/input_policy.h"
#include "diablo/v1/file.grpc.pb.h"
#include "diablo/v1/job.grpc.pb.h"
#include "diablo/v1/worker.grpc.pb.h"
#include "server/auth.h"
#include "server/metrics.h"
#include "server/scheduler.h"
#include "server/submit_checks.h"

namespace diablo::server {

struct ServiceContext {
  Scheduler* scheduler = nullptr;
  Authenticator* auth = nullptr;
  Metrics* metrics = nullptr;  // may be null (no metrics port)
  // Scratch space for uploads in progress and cached model headers.
  std::filesystem::path data_dir;
  int64_t max_upload_bytes = int64_t{64} << 30;
  // What jobs may name besides their tenant's uploads (never null when serving).
  const InputPolicy* inputs = nullptr;
  // The submit checks' bounds and caches (server/submit_checks.h).
  std::shared_ptr<SubmitChecks> submit_checks;
};

class JobServiceImpl final : public v1::JobService::Service {
 public:
  explicit JobServiceImpl(ServiceContext context) : ctx_(std::move(context)) {}
  grpc::Status CreateJob(grpc::ServerContext*, const v1::CreateJobRequest*, v1::Job*) override;
  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest*, v1::Job*) override;
  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest*,
                        v1::ListJobsResponse*) override;
  grpc::Status CancelJob(grpc::ServerContext*, const v1::CancelJobRequest*, v1::Job*) override;
  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest*,
                        grpc::ServerWriter<v1::JobEvent>*) override;
  grpc::Status ListArtifacts(grpc::ServerContext*, const v1::ListArtifactsRequest*,
                             v1::ListArtifactsResponse*) override;
  grpc::Status DownloadArtifact(grpc::ServerContext*, const v1::DownloadArtifactRequest*,
                                grpc::ServerWriter<v1::DataChunk>*) override;

 private:
  ServiceContext ctx_;
};

class FileServiceImpl final : public v1::FileService::Service {
 public:
  explicit FileServiceImpl(ServiceContext context) : ctx_(std::move(context)) {}
  grpc::Status UploadFile(grpc::ServerContext*, grpc::ServerReader<v1::UploadFileRequest>*,
                          v1::File*) override;
  grpc::Status FindFile(grpc::ServerContext*, const v1::FindFileRequest*, v1::File*) override;
  grpc::Status ListFiles(grpc::ServerContext*, const v1::ListFilesRequest*,
                         v1::ListFilesResponse*) override;
  grpc::Status DeleteFile(grpc::ServerContext*, const v1::DeleteFileRequest*,
                          v1::DeleteFileResponse*) override;

 private:
  ServiceContext ctx_;
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  explicit WorkerServiceImpl(ServiceContext context) : ctx_(std::move(context)) {}
  grpc::Status RegisterWorker(grpc::ServerContext*, const v1::RegisterWorkerRequest*,
                              v1::RegisterWorkerResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse*) override;
  grpc::Status LeaseJob(grpc::ServerContext*, const v1::LeaseJobRequest*,
                        v1::LeaseJobResponse*) override;
  grpc::Status ReportEvents(grpc::ServerContext*, const v1::ReportEventsRequest*,
                            v1::ReportEventsResponse*) override;
  grpc::Status CompleteAttempt(grpc::ServerContext*, const v1::CompleteAttemptRequest*,
                               v1::CompleteAttemptResponse*) override;

 private:
  ServiceContext ctx_;
};

class FleetServiceImpl final : public v1::FleetService::Service {
 public:
  explicit FleetServiceImpl(ServiceContext context) : ctx_(std::move(context)) {}
  grpc::Status ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*,
                           v1::ListWorkersResponse*) override;
  grpc::Status RevokeWorker(grpc::ServerContext*, const v1::RevokeWorkerRequest*,
                            v1::RevokeWorkerResponse*) override;

 private:
  ServiceContext ctx_;
};

}  // namespace diablo::server
