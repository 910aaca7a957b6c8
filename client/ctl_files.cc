// diablo-ctl files upload|list|rm and download: chunked transfers with
// SHA-256 checks on both ends.
#include <google/protobuf/struct.pb.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/ctl.h"
#include "common/safe_name.h"
#include "common/sha256.h"

namespace diablo::ctl {
namespace {

namespace fs = std::filesystem;
constexpr size_t kChunk = 1 << 20;

}  // namespace

std::string UploadFile(const Options& options, Clients& clients, const std::string& path,
                       const std::string& name, int* exit_code) {
  if (absl::Status ok = ValidateFileName(name, "the upload name"); !ok.ok()) {
    *exit_code = UsageError(std::string(ok.message()));
    return "";
  }
  absl::StatusOr<std::string> digest = Sha256OfFile(path);
  if (!digest.ok()) {
    *exit_code = UsageError(std::string(digest.status().message()));
    return "";
  }
  {
    v1::FindFileRequest find;
    find.set_sha256(*digest);
    v1::File existing;
    auto context = NewCallContext(options.rpc);
    grpc::Status status = clients.files->FindFile(context.get(), find, &existing);
    if (status.ok()) {
      std::fprintf(stderr, "diablo-ctl: %s is already uploaded as %s\n", path.c_str(),
                   existing.id().c_str());
      return existing.id();
    }
    if (status.error_code() != grpc::StatusCode::NOT_FOUND) {
      *exit_code = ReportRpcError(options, status);
      return "";
    }
  }
  std::error_code ec;
  const int64_t size = static_cast<int64_t>(fs::file_size(path, ec));
  std::ifstream in(path, std::ios::binary);
  if (ec || !in) {
    *exit_code = UsageError(absl::StrCat("cannot read ", path));
    return "";
  }
  // Uploads take as long as they take; the deadline only bounds a stalled one.
  auto context = NewCallContext(options.rpc, std::chrono::seconds(600 + size / (1 << 20)));
  v1::File file;
  auto writer = clients.files->UploadFile(context.get(), &file);
  v1::UploadFileRequest message;
  message.mutable_header()->set_name(name);
  message.mutable_header()->set_size_bytes(size);
  message.mutable_header()->set_sha256(*digest);
  bool ok = writer->Write(message);
  std::string buffer(kChunk, '\0');
  int64_t sent = 0;
  const bool tty = isatty(STDERR_FILENO) != 0;
  while (ok && in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    if (in.gcount() == 0) break;
    message.set_data(buffer.data(), static_cast<size_t>(in.gcount()));
    ok = writer->Write(message);
    sent += in.gcount();
    if (tty)
      std::fprintf(stderr, "\r\033[Kuploading %s: %.0f%%", name.c_str(),
                   100.0 * sent / std::max<int64_t>(size, 1));
  }
  if (tty) std::fprintf(stderr, "\r\033[K");
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) {
    *exit_code = ReportRpcError(options, status);
    return "";
  }
  std::fprintf(stderr, "diablo-ctl: uploaded %s as %s (%s bytes)\n", path.c_str(),
               file.id().c_str(), std::to_string(size).c_str());
  return file.id();
}

int FilesUpload(const Options& options, const std::string& path, const std::string& name) {
  Clients clients = Connect(options);
  int code = kOk;
  const std::string id = UploadFile(
      options, clients, path, name.empty() ? fs::path(path).filename().string() : name, &code);
  if (id.empty()) return code;
  if (options.json) {
    google::protobuf::Struct uploaded;  // escaped by the JSON printer, whatever the id holds
    (*uploaded.mutable_fields())["id"].set_string_value(id);
    (*uploaded.mutable_fields())["uri"].set_string_value("upload://" + id);
    std::printf("%s\n", ToJson(uploaded).c_str());
  } else {
    std::printf("upload://%s\n", id.c_str());
  }
  return kOk;
}

int FilesList(const Options& options) {
  Clients clients = Connect(options);
  v1::ListFilesRequest request;
  v1::ListFilesResponse all;
  do {
    v1::ListFilesResponse page;
    auto context = NewCallContext(options.rpc);
    grpc::Status status = clients.files->ListFiles(context.get(), request, &page);
    if (!status.ok()) return ReportRpcError(options, status);
    for (v1::File& f : *page.mutable_files()) *all.add_files() = std::move(f);
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  if (options.json) {
    std::printf("%s\n", ToJson(all).c_str());
    return kOk;
  }
  std::printf("%-20s %-32s %12s  %s\n", "ID", "NAME", "BYTES", "SHA256");
  for (const v1::File& f : all.files())
    std::printf("%-20s %-32s %12lld  %s\n", f.id().c_str(), f.name().c_str(),
                static_cast<long long>(f.size_bytes()), f.sha256().substr(0, 16).c_str());
  return kOk;
}

int FilesRemove(const Options& options, const std::string& id) {
  Clients clients = Connect(options);
  v1::DeleteFileRequest request;
  request.set_id(id.rfind("upload://", 0) == 0 ? id.substr(9) : id);
  v1::DeleteFileResponse response;
  auto context = NewCallContext(options.rpc);
  grpc::Status status = clients.files->DeleteFile(context.get(), request, &response);
  if (!status.ok()) return ReportRpcError(options, status);
  std::fprintf(stderr, "deleted %s\n", request.id().c_str());
  return kOk;
}

int Download(const Options& options, const std::string& id, const std::string& out_dir,
             const std::string& only) {
  Clients clients = Connect(options);
  v1::ListArtifactsRequest list;
  list.set_job_id(id);
  v1::ListArtifactsResponse artifacts;
  {
    auto context = NewCallContext(options.rpc);
    grpc::Status status = clients.jobs->ListArtifacts(context.get(), list, &artifacts);
    if (!status.ok()) return ReportRpcError(options, status);
  }
  if (artifacts.artifacts().empty())
    return UsageError(
        absl::StrCat("job ", id, " has no artifacts yet (they appear when it succeeds)"));
  // Every name is checked before anything is written: a server (or whoever
  // answers in its place) must not steer a write outside the folder.
  for (const v1::Artifact& artifact : artifacts.artifacts()) {
    if (absl::Status ok = ValidateRelativePath(artifact.name(), "the server sent artifact name");
        !ok.ok()) {
      std::fprintf(stderr, "diablo-ctl: %s; nothing was written\n",
                   std::string(ok.message()).c_str());
      return kRpcFailed;
    }
  }
  const fs::path root = out_dir.empty() ? fs::path(id) : fs::path(out_dir);
  int downloaded = 0;
  for (const v1::Artifact& artifact : artifacts.artifacts()) {
    if (!only.empty() && artifact.name() != only && artifact.name().rfind(only + "/", 0) != 0)
      continue;
    const fs::path target = root / artifact.name();
    const fs::path partial = target.string() + ".partial";
    fs::create_directories(target.parent_path());
    v1::DownloadArtifactRequest request;
    request.set_job_id(id);
    request.set_name(artifact.name());
    auto context =
        NewCallContext(options.rpc, std::chrono::seconds(600 + artifact.size_bytes() / (1 << 20)));
    auto reader = clients.jobs->DownloadArtifact(context.get(), request);
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    Sha256 sha;
    v1::DataChunk chunk;
    while (reader->Read(&chunk)) {
      sha.Update(chunk.data());
      out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
    }
    out.close();
    grpc::Status status = reader->Finish();
    if (!status.ok()) {
      fs::remove(partial);
      return ReportRpcError(options, status);
    }
    if (const std::string digest = sha.HexDigest(); digest != artifact.sha256()) {
      fs::remove(partial);
      std::fprintf(stderr,
                   "diablo-ctl: %s: SHA-256 %s does not match the job's record %s; nothing kept\n",
                   artifact.name().c_str(), digest.c_str(), artifact.sha256().c_str());
      return kChecksum;
    }
    fs::rename(partial, target);
    ++downloaded;
    std::fprintf(stderr, "%s  %s (%lld bytes, sha256 ok)\n",
                 artifact.sha256().substr(0, 16).c_str(), target.c_str(),
                 static_cast<long long>(artifact.size_bytes()));
  }
  if (downloaded == 0) return UsageError(absl::StrCat("job ", id, " has no artifact named ", only));
  std::printf("%s\n", root.c_str());
  return kOk;
}

}  // namespace diablo::ctl
