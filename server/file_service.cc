// FileService: checked, chunked uploads into storage, and their listing.
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/absl_view.h"
#include "common/input_policy.h"
#include "common/safe_name.h"
#include "common/sha256.h"
#include "server/grpc_status.h"
#include "server/serve.h"

namespace diablo::server {
namespace {

grpc::Status Error(grpc::StatusCode code, std::string message) {
  return grpc::Status(code, std::move(message));
}

}  // namespace

grpc::Status FileServiceImpl::UploadFile(grpc::ServerContext* context,
                                         grpc::ServerReader<v1::UploadFileRequest>* reader,
                                         v1::File* response) {
  CallTimer timer(ctx_.metrics, "UploadFile");
  absl::StatusOr<Principal> who = ctx_.auth->Authenticate(*context, Role::kUser);
  if (!who.ok()) return timer.Done(ToGrpc(who.status()));
  v1::UploadFileRequest message;
  if (!reader->Read(&message) || !message.has_header())
    return timer.Done(
        Error(grpc::StatusCode::INVALID_ARGUMENT, "the first message must be the upload header"));
  const v1::UploadHeader header = message.header();
  if (absl::Status name = ValidateFileName(header.name(), "header.name"); !name.ok())
    return timer.Done(ToGrpc(name));
  if (header.size_bytes() < 0 || header.size_bytes() > ctx_.max_upload_bytes)
    return timer.Done(
        Error(grpc::StatusCode::INVALID_ARGUMENT,
              absl::StrCat("header.size_bytes: must be in [0, ", ctx_.max_upload_bytes, "]")));
  if (header.sha256().size() != 64)
    return timer.Done(
        Error(grpc::StatusCode::INVALID_ARGUMENT, "header.sha256: 64 lower-case hex digits"));
  // The tenant's quotas, before any data is read; the slot counts this
  // upload among its concurrent ones until this function returns, however.
  absl::StatusOr<UploadTracker::Slot> slot =
      ctx_.scheduler->BeginUpload(who->tenant, header.size_bytes());
  if (!slot.ok()) return timer.Done(ToGrpc(slot.status()));

  // The content goes to a scratch file first; nothing reaches storage or the
  // store until its size and checksum match the header.
  const std::string id = NewId("f-");
  const std::filesystem::path scratch = ctx_.data_dir / "uploads" / id;
  std::filesystem::create_directories(scratch.parent_path());
  struct Cleanup {
    std::filesystem::path path;
    ~Cleanup() { ::unlink(path.c_str()); }
  } cleanup{scratch};
  std::ofstream out(scratch, std::ios::binary);
  Sha256 sha;
  int64_t received = 0;
  while (reader->Read(&message)) {
    if (!message.has_data())
      return timer.Done(
          Error(grpc::StatusCode::INVALID_ARGUMENT, "only data messages may follow the header"));
    received += static_cast<int64_t>(message.data().size());
    if (received > header.size_bytes())
      return timer.Done(
          Error(grpc::StatusCode::INVALID_ARGUMENT,
                absl::StrCat("more data than header.size_bytes (", header.size_bytes(), ")")));
    sha.Update(message.data());
    out.write(message.data().data(), static_cast<std::streamsize>(message.data().size()));
    // Stop at the first failed write (a full disk) rather than read, and
    // drop, the rest of a possibly huge stream; the scratch file goes.
    if (!out.flush())
      return timer.Done(Error(grpc::StatusCode::UNAVAILABLE,
                              "the scheduler's scratch space is full; nothing was stored, retry "
                              "later"));
  }
  out.close();
  if (context->IsCancelled())
    return timer.Done(Error(grpc::StatusCode::CANCELLED, "upload cancelled"));
  if (!out)
    return timer.Done(Error(grpc::StatusCode::UNAVAILABLE,
                            "the scheduler's scratch space is full; nothing was stored, retry "
                            "later"));
  if (received != header.size_bytes())
    return timer.Done(Error(
        grpc::StatusCode::DATA_LOSS,
        absl::StrCat("received ", received, " bytes, the header said ", header.size_bytes())));
  if (const std::string digest = sha.HexDigest(); digest != header.sha256())
    return timer.Done(
        Error(grpc::StatusCode::DATA_LOSS,
              absl::StrCat("SHA-256 mismatch: received content hashes to ", digest,
                           ", the header said ", header.sha256(), "; nothing was stored")));
  const std::string key = absl::StrCat(AbslView(kUploadKeyPrefix), id);
  if (absl::Status stored = ctx_.scheduler->storage().PutFile(key, scratch); !stored.ok())
    return timer.Done(ToGrpc(stored));
  absl::StatusOr<v1::File> file = ctx_.scheduler->AddFile(who->tenant, header, key);
  if (!file.ok()) {
    (void)ctx_.scheduler->storage().Delete(key);
    return timer.Done(ToGrpc(file.status()));
  }
  *response = std::move(*file);
  return timer.Done(grpc::Status::OK);
}

grpc::Status FileServiceImpl::FindFile(grpc::ServerContext* context,
                                       const v1::FindFileRequest* request, v1::File* response) {
  return Serve(ctx_, context, "FindFile", Role::kUser, response, [&](const Principal& who) {
    return ctx_.scheduler->FindFile(who.tenant, request->sha256());
  });
}

grpc::Status FileServiceImpl::ListFiles(grpc::ServerContext* context,
                                        const v1::ListFilesRequest* request,
                                        v1::ListFilesResponse* response) {
  return Serve(ctx_, context, "ListFiles", Role::kUser, response, [&](const Principal& who) {
    return ctx_.scheduler->ListFiles(who.tenant, *request);
  });
}

grpc::Status FileServiceImpl::DeleteFile(grpc::ServerContext* context,
                                         const v1::DeleteFileRequest* request,
                                         v1::DeleteFileResponse* response) {
  return Serve(ctx_, context, "DeleteFile", Role::kUser, response, [&](const Principal& who) {
    return Empty<v1::DeleteFileResponse>(ctx_.scheduler->DeleteFile(who.tenant, request->id()));
  });
}

}  // namespace diablo::server
