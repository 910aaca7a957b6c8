// absl::Status → grpc::Status, keeping the code and the message.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace diablo::server {

inline grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace diablo::server
