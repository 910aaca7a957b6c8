#include "server/system_service.h"

#include "diablo/build_info.h"

namespace diablo {

grpc::Status SystemServiceImpl::GetVersion(grpc::ServerContext* /*context*/,
                                           const v1::GetVersionRequest* /*request*/,
                                           v1::GetVersionResponse* response) {
  response->set_version(kVersion);
  response->set_git_commit(kGitCommit);
  response->set_uptime_seconds(absl::ToInt64Seconds(absl::Now() - started_at_));
  response->add_api_versions("diablo.v1");
  return grpc::Status::OK;
}

}  // namespace diablo
