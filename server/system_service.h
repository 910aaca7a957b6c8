// diablo.v1.SystemService: version and uptime of the running scheduler.
#pragma once

#include "absl/time/time.h"
#include "diablo/v1/system.grpc.pb.h"

namespace diablo {

class SystemServiceImpl final : public v1::SystemService::Service {
 public:
  explicit SystemServiceImpl(absl::Time started_at) : started_at_(started_at) {}

  grpc::Status GetVersion(grpc::ServerContext* context, const v1::GetVersionRequest* request,
                          v1::GetVersionResponse* response) override;

 private:
  const absl::Time started_at_;
};

}  // namespace diablo
