// ObjectStore over S3: addressing, signing and retries, multipart uploads
// for large files, paginated listing.  HTTP is in s3_http.cc, XML in
// s3_xml.cc, signing in sigv4.cc, answers-to-statuses in s3_errors.cc.
#include "common/s3_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/absl_view.h"
#include "common/s3_errors.h"
#include "common/s3_http.h"
#include "common/s3_xml.h"
#include "common/sha256.h"
#include "common/sigv4.h"
#include "common/status_macros.h"

namespace diablo {
namespace {

namespace fs = std::filesystem;
using s3::HttpResponse;

constexpr int64_t kMinPartBytes = int64_t{5} << 20;  // S3's minimum for all parts but the last
constexpr int64_t kMaxParts = 10000;                 // S3's maximum part count
// Requests without a file body (HEAD, DELETE, listing, multipart control)
// finish well within this; transfers of data rely on the low-speed limit.
constexpr long kControlTimeoutSeconds = 120;
// CompleteMultipartUpload may keep the connection quiet while S3 assembles
// a large object; it gets a long overall limit instead of the low-speed one.
constexpr long kCompleteTimeoutSeconds = 900;

struct Endpoint {
  std::string scheme;  // http or https
  std::string host;    // host[:port]
};

absl::StatusOr<Endpoint> ParseEndpoint(std::string_view text) {
  Endpoint e;
  const size_t sep = text.find("://");
  if (sep != std::string_view::npos)
    e.scheme = absl::AsciiStrToLower(AbslView(text.substr(0, sep)));
  std::string_view rest = sep == std::string_view::npos ? text : text.substr(sep + 3);
  while (rest.ends_with('/')) rest.remove_suffix(1);
  if ((e.scheme != "http" && e.scheme != "https") || rest.empty() ||
      rest.find_first_of("/?# ") != rest.npos)
    return absl::InvalidArgumentError(absl::StrCat(
        "DIABLO_S3_ENDPOINT must be http(s)://host[:port], got '", AbslView(text), "'"));
  e.host = std::string(rest);
  return e;
}

// Closes a descriptor on every path out.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

// A request body: bytes in memory, or `length` bytes of `fd` from `offset`.
struct Body {
  std::string_view bytes = {};
  int fd = -1;
  int64_t offset = 0;
  int64_t length = 0;
};

// Signing the real payload hash lets S3 reject a body that changed in
// flight or on disk during the upload; for files it costs one extra read.
absl::StatusOr<std::string> PayloadHash(const Body& body) {
  if (body.fd < 0)
    return body.bytes.empty() ? std::string(sigv4::kEmptyPayloadSha256) : Sha256Hex(body.bytes);
  Sha256 sha;
  std::string buffer(1 << 20, '\0');
  for (int64_t done = 0; done < body.length;) {
    const size_t want = static_cast<size_t>(
        std::min<int64_t>(static_cast<int64_t>(buffer.size()), body.length - done));
    const ssize_t got = ::pread(body.fd, buffer.data(), want, body.offset + done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      return absl::InternalError(absl::StrCat("cannot read the file to upload: ",
                                              got < 0 ? std::strerror(errno) : "it ended early"));
    sha.Update(std::string_view(buffer.data(), static_cast<size_t>(got)));
    done += got;
  }
  return sha.HexDigest();
}

bool Success(const HttpResponse& r) { return r.status >= 200 && r.status < 300; }

class S3Store final : public ObjectStore {
 public:
  S3Store(S3Settings settings, Endpoint endpoint, std::string bucket, std::string prefix,
          bool path_style)
      : settings_(std::move(settings)),
        credentials_{settings_.access_key_id, settings_.secret_access_key, settings_.session_token},
        endpoint_(std::move(endpoint)),
        bucket_(std::move(bucket)),
        prefix_(std::move(prefix)),
        path_style_(path_style) {}

  std::string uri() const override {
    return absl::StrCat("s3://", bucket_, prefix_.empty() ? "" : "/", prefix_);
  }

  absl::Status PutBytes(std::string_view key, std::string_view data) override {
    ASSIGN_OR_RETURN(const std::string object, ObjectName(key));
    Call call{.method = "PUT", .object = object, .timeout_seconds = 0};
    call.body.bytes = data;
    return Check(Send(call), object);
  }

  absl::Status PutFile(std::string_view key, const fs::path& local) override {
    ASSIGN_OR_RETURN(const std::string object, ObjectName(key));
    FdCloser file{::open(local.c_str(), O_RDONLY | O_CLOEXEC)};
    if (file.fd < 0) {
      const int error = errno;
      const std::string message = absl::StrCat("cannot open ", local.string(), " to upload to ",
                                               Describe(object), ": ", std::strerror(error));
      if (error == ENOENT) return absl::NotFoundError(message);
      if (error == EACCES) return absl::PermissionDeniedError(message);
      return absl::InternalError(message);
    }
    struct stat st {};
    if (::fstat(file.fd, &st) != 0 || !S_ISREG(st.st_mode))
      return absl::InvalidArgumentError(absl::StrCat(local.string(), " is not a regular file"));
    if (st.st_size > settings_.multipart_threshold_bytes)
      return PutMultipart(object, file.fd, st.st_size);
    Call call{.method = "PUT", .object = object, .timeout_seconds = 0};
    call.body = Body{.fd = file.fd, .offset = 0, .length = st.st_size};
    return Check(Send(call), object);
  }

  absl::Status GetFile(std::string_view key, const fs::path& local) override {
    ASSIGN_OR_RETURN(const std::string object, ObjectName(key));
    std::error_code ec;
    if (local.has_parent_path()) fs::create_directories(local.parent_path(), ec);
    if (ec)
      return absl::InternalError(
          absl::StrCat("cannot create ", local.parent_path().string(), ": ", ec.message()));
    // Downloaded next to the target and renamed over it: a reader never sees
    // a partial file, and a failure leaves nothing behind.
    static std::atomic<uint64_t> counter{0};
    const fs::path temp = local.parent_path() / absl::StrCat(".", local.filename().string(),
                                                             ".tmp.", getpid(), ".", counter++);
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
      return absl::InternalError(
          absl::StrCat("cannot create ", temp.string(), ": ", std::strerror(errno)));
    Call call{.method = "GET", .object = object, .response_fd = fd, .timeout_seconds = 0};
    absl::Status status = Check(Send(call), object);
    if (status.ok() && ::fsync(fd) != 0)
      status = absl::InternalError(
          absl::StrCat("cannot write ", temp.string(), ": ", std::strerror(errno)));
    ::close(fd);
    if (status.ok() && ::rename(temp.c_str(), local.c_str()) != 0)
      status = absl::InternalError(absl::StrCat("cannot rename ", temp.string(), " to ",
                                                local.string(), ": ", std::strerror(errno)));
    if (!status.ok()) ::unlink(temp.c_str());
    return status;
  }

  absl::StatusOr<std::string> GetBytes(std::string_view key) override {
    ASSIGN_OR_RETURN(const std::string object, ObjectName(key));
    Call call{.method = "GET", .object = object, .timeout_seconds = 0};
    ASSIGN_OR_RETURN(HttpResponse response, Send(call));
    if (!Success(response)) return ErrorFor(response, object);
    return std::move(response.body);
  }

  absl::StatusOr<std::string> ReadRange(std::string_view key, int64_t offset,
                                        int64_t length) override {
    ASSIGN_OR_RETURN(const std::string object, ObjectName(key));
    if (offset < 0 || length < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("negative range ", offset, "+", length, " of ", Describe(object)));
    if (length == 0) {
      RETURN_IF_ERROR(Stat(key).status());  // still NOT_FOUND for an absent object
      return std::string();
    }
    Call call{.method = "GET", .object = object, .timeout_seconds = 0};
    call.headers.emplace_back("Range", absl::StrCat("bytes=", offset, "-", offset + length - 1));
    ASSIGN_OR_RETURN(HttpResponse response, Send(call));
    if (response.status == 416) return std::string();  // the range starts at or past the end
    if (!Success(response)) return ErrorFor(response, object);
    // A server that ignores Range sends the whole object (200, not 206).
    if (response.status == 200 && static_cast<size_t>(offset) < response.body.size())
      return response.body.substr(static_cast<size_t>(offset), static_cast<size_t>(length));
    if (response.status == 200) return std::string();
    return std::move(response.body);
  }

  absl::StatusOr<ObjectInfo> Stat(std::string_view key) override {
    ASSIGN_OR_RETURN(const std::string object, ObjectName(key));
    Call call{.method = "HEAD", .object = object};
    ASSIGN_OR_RETURN(HttpResponse response, Send(call));
    if (!Success(response)) return ErrorFor(response, object);
    int64_t size = 0;
    auto it = response.headers.find("content-length");
    if (it == response.headers.end() || !absl::SimpleAtoi(it->second, &size))
      return absl::InternalError(
          absl::StrCat("HEAD ", Describe(object), " answered without a Content-Length"));
    return ObjectInfo{std::string(key), size};
  }

  absl::StatusOr<std::vector<ObjectInfo>> List(std::string_view prefix) override {
    const std::string full =
        prefix_.empty() ? std::string(prefix) : absl::StrCat(prefix_, "/", AbslView(prefix));
    const std::string strip = prefix_.empty() ? "" : prefix_ + "/";
    std::vector<ObjectInfo> objects;
    std::string token;
    do {
      Call call{.method = "GET",
                .query = {{"list-type", "2"},
                          {"prefix", full},
                          {"max-keys", std::to_string(settings_.list_page_keys)}}};
      if (!token.empty()) call.query.emplace_back("continuation-token", token);
      ASSIGN_OR_RETURN(HttpResponse response, Send(call));
      if (!Success(response)) return ErrorFor(response, full);
      ASSIGN_OR_RETURN(s3::ListPage page, s3::ParseListObjectsV2(response.body));
      for (ObjectInfo& info : page.objects) {
        if (!info.key.starts_with(strip)) continue;  // never expected: S3 filtered by prefix
        objects.push_back({info.key.substr(strip.size()), info.size_bytes});
      }
      if (page.truncated && page.next_continuation_token == token)
        return absl::InternalError(absl::StrCat("listing ", Describe(full),
                                                ": the server repeats its continuation token"));
      token = page.truncated ? page.next_continuation_token : "";
    } while (!token.empty());
    std::sort(objects.begin(), objects.end(),
              [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
    return objects;
  }

  absl::Status Delete(std::string_view key) override {
    ASSIGN_OR_RETURN(const std::string object, ObjectName(key));
    Call call{.method = "DELETE", .object = object};
    ASSIGN_OR_RETURN(HttpResponse response, Send(call));
    // Absent is fine; an absent bucket is a configuration error.
    if (Success(response) ||
        (response.status == 404 && s3::ParseErrorBody(response.body).code != "NoSuchBucket"))
      return absl::OkStatus();
    return ErrorFor(response, object);
  }

  absl::Status CreateBucket() {
    Call call{.method = "PUT"};
    std::string body;
    // us-east-1 is the one region that takes no LocationConstraint.
    if (settings_.region != "us-east-1") {
      body = absl::StrCat(
          "<CreateBucketConfiguration "
          "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>",
          s3::XmlEscape(settings_.region), "</LocationConstraint></CreateBucketConfiguration>");
      call.body.bytes = body;
    }
    ASSIGN_OR_RETURN(HttpResponse response, Send(call));
    if (Success(response)) return absl::OkStatus();
    if (response.status == 409 &&
        s3::ParseErrorBody(response.body).code == "BucketAlreadyOwnedByYou")
      return absl::OkStatus();
    return ErrorFor(response, "");
  }

 private:
  struct Call {
    std::string method;
    std::string object = {};  // the full object name; empty: the bucket itself
    sigv4::QueryParams query = {};
    sigv4::Headers headers = {};  // besides host and the x-amz-* the signer adds
    Body body = {};
    int response_fd = -1;
    long timeout_seconds = kControlTimeoutSeconds;  // 0: data transfers, no overall limit
    bool may_idle = false;                          // no low-speed limit
  };

  std::string Describe(std::string_view object) const {
    return absl::StrCat("s3://", bucket_, object.empty() ? "" : "/", AbslView(object));
  }

  absl::StatusOr<std::string> ObjectName(std::string_view key) const {
    RETURN_IF_ERROR(ValidateObjectKey(key));
    return prefix_.empty() ? std::string(key) : absl::StrCat(prefix_, "/", AbslView(key));
  }

  // Signs and sends `call`, again after a connection failure or a 5xx/429
  // answer (with backoff, re-signed, the download rewound).
  absl::StatusOr<HttpResponse> Send(const Call& call) {
    ASSIGN_OR_RETURN(const std::string payload_hash, PayloadHash(call.body));
    const std::string host =
        path_style_ ? endpoint_.host : absl::StrCat(bucket_, ".", endpoint_.host);
    std::string path = path_style_ ? "/" + sigv4::UriEncode(bucket_, true) : "";
    if (!call.object.empty() || path.empty())
      absl::StrAppend(&path, "/", sigv4::UriEncode(call.object, true));
    const std::string query = sigv4::CanonicalQueryString(call.query);
    sigv4::Headers headers = call.headers;
    headers.emplace_back("Host", host);
    // POST bodies are XML; naming it keeps servers from parsing a form.
    if (call.method == "POST") headers.emplace_back("Content-Type", "application/xml");

    for (int attempt = 0;; ++attempt) {
      if (attempt > 0) {
        thread_local std::mt19937 jitter{std::random_device{}()};
        const auto delay =
            std::chrono::milliseconds((200 << std::min(attempt - 1, 5)) + jitter() % 100);
        std::this_thread::sleep_for(delay);
        if (call.response_fd >= 0 &&
            (::ftruncate(call.response_fd, 0) != 0 || ::lseek(call.response_fd, 0, SEEK_SET) != 0))
          return absl::InternalError(
              absl::StrCat("cannot rewind the download of ", Describe(call.object)));
      }
      const sigv4::Signature signature =
          sigv4::Sign({.method = call.method,
                       .canonical_uri = path,
                       .query = call.query,
                       .headers = headers,
                       .payload_sha256 = payload_hash},
                      std::chrono::system_clock::now(), credentials_, settings_.region, "s3");
      s3::HttpRequest http{
          .method = call.method,
          .url = absl::StrCat(endpoint_.scheme, "://", host, path, query.empty() ? "" : "?", query),
          .headers = signature.headers,
          .body = call.body.bytes,
          .body_fd = call.body.fd,
          .body_offset = call.body.offset,
          .body_length = call.body.length,
          .response_fd = call.response_fd,
          .timeout_seconds = call.timeout_seconds,
          .low_speed_limit = !call.may_idle};
      absl::StatusOr<HttpResponse> response = s3::PerformHttp(http);
      const bool retry = response.ok() ? s3::IsRetryableHttpStatus(response->status)
                                       : absl::IsUnavailable(response.status());
      if (retry && attempt < settings_.max_retries) continue;
      if (!response.ok() && absl::IsUnavailable(response.status()))
        return absl::UnavailableError(absl::StrCat(
            "cannot reach the S3 endpoint ", endpoint_.scheme, "://", endpoint_.host, " for ",
            Describe(call.object), " (", attempt + 1, " attempts): ", response.status().message()));
      return response;
    }
  }

  absl::Status Check(absl::StatusOr<HttpResponse> response, std::string_view object) const {
    if (!response.ok()) return response.status();
    return Success(*response) ? absl::OkStatus() : ErrorFor(*response, object);
  }

  absl::Status ErrorFor(const HttpResponse& response, std::string_view object) const {
    return s3::StatusFromAnswer(response, Describe(object));
  }

  // CreateMultipartUpload, UploadPart for each part, CompleteMultipartUpload;
  // the object appears only on completion, and a failure aborts the upload
  // so no parts linger (and bill) on the server.
  absl::Status PutMultipart(const std::string& object, int fd, int64_t size) {
    Call create{.method = "POST", .object = object, .query = {{"uploads", ""}}};
    ASSIGN_OR_RETURN(HttpResponse created, Send(create));
    if (!Success(created)) return ErrorFor(created, object);
    const std::optional<std::string> upload_id = s3::XmlText(created.body, "UploadId");
    if (!upload_id || upload_id->empty())
      return absl::InternalError(
          absl::StrCat("CreateMultipartUpload for ", Describe(object), " returned no UploadId"));
    const int64_t part_bytes = std::max(settings_.part_bytes, (size + kMaxParts - 1) / kMaxParts);

    absl::Status status = [&]() -> absl::Status {
      std::vector<std::pair<int, std::string>> parts;
      for (int64_t offset = 0; offset < size; offset += part_bytes) {
        const int number = static_cast<int>(parts.size()) + 1;
        Call upload{.method = "PUT",
                    .object = object,
                    .query = {{"partNumber", std::to_string(number)}, {"uploadId", *upload_id}},
                    .timeout_seconds = 0};
        upload.body =
            Body{.fd = fd, .offset = offset, .length = std::min(part_bytes, size - offset)};
        ASSIGN_OR_RETURN(HttpResponse uploaded, Send(upload));
        if (!Success(uploaded)) return ErrorFor(uploaded, object);
        auto etag = uploaded.headers.find("etag");
        if (etag == uploaded.headers.end())
          return absl::InternalError(
              absl::StrCat("UploadPart ", number, " of ", Describe(object), " returned no ETag"));
        parts.emplace_back(number, etag->second);
      }
      const std::string xml = s3::CompleteMultipartUploadXml(parts);
      Call complete{.method = "POST",
                    .object = object,
                    .query = {{"uploadId", *upload_id}},
                    .timeout_seconds = kCompleteTimeoutSeconds,
                    .may_idle = true};
      complete.body.bytes = xml;
      ASSIGN_OR_RETURN(HttpResponse completed, Send(complete));
      if (!Success(completed)) return ErrorFor(completed, object);
      // S3 can answer 200 and still report a failure in the body.
      if (completed.body.find("<Error>") != std::string::npos) {
        const s3::ErrorBody error = s3::ParseErrorBody(completed.body);
        return absl::UnavailableError(absl::StrCat("CompleteMultipartUpload of ", Describe(object),
                                                   " failed (", error.code, ": ", error.message,
                                                   ")"));
      }
      return absl::OkStatus();
    }();
    if (!status.ok()) {
      Call abort{.method = "DELETE", .object = object, .query = {{"uploadId", *upload_id}}};
      (void)Send(abort);  // best effort: the upload's own error is the one to report
    }
    return status;
  }

  const S3Settings settings_;
  const sigv4::Credentials credentials_;
  const Endpoint endpoint_;
  const std::string bucket_;
  const std::string prefix_;  // no leading or trailing '/'
  const bool path_style_;
};

absl::StatusOr<std::unique_ptr<S3Store>> MakeS3Store(std::string_view uri,
                                                     const S3Settings& settings) {
  const auto invalid = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("storage URI ", AbslView(uri), ": ", AbslView(why)));
  };
  if (!uri.starts_with("s3://")) return invalid("expected s3://bucket[/prefix]");
  std::string_view rest = uri.substr(5);
  while (rest.ends_with('/')) rest.remove_suffix(1);
  const size_t slash = rest.find('/');
  const std::string bucket(rest.substr(0, slash));
  const std::string prefix(slash == std::string_view::npos ? "" : rest.substr(slash + 1));
  if (bucket.empty() ||
      bucket.find_first_not_of(
          "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") != std::string::npos)
    return invalid(
        "expected s3://bucket[/prefix] with a bucket name of letters, digits, '.', '-' and '_'");
  if (!prefix.empty() && !ValidateObjectKey(prefix).ok())
    return invalid("the prefix has an empty, '.' or '..' segment");
  if (settings.access_key_id.empty() || settings.secret_access_key.empty())
    return absl::FailedPreconditionError(
        absl::StrCat("storage URI ", AbslView(uri),
                     ": no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
                     "AWS_SESSION_TOKEN for temporary "
                     "credentials)"));
  if (settings.part_bytes < kMinPartBytes)
    return absl::InvalidArgumentError(absl::StrCat("DIABLO_S3_PART_BYTES must be at least ",
                                                   kMinPartBytes, " (S3's minimum part size), got ",
                                                   settings.part_bytes));
  if (settings.multipart_threshold_bytes < 0 || settings.list_page_keys < 1 ||
      settings.list_page_keys > 1000 || settings.max_retries < 0 || settings.region.empty())
    return absl::InvalidArgumentError(
        "S3 settings out of range: the multipart threshold must be >= 0, list pages 1..1000 keys, "
        "retries >= 0 "
        "and the region non-empty");
  ASSIGN_OR_RETURN(
      Endpoint endpoint,
      ParseEndpoint(settings.endpoint.empty()
                        ? absl::StrCat("https://s3.", settings.region, ".amazonaws.com")
                        : settings.endpoint));
  // Dotted bucket names break the TLS wildcard of virtual hosts; a custom
  // endpoint is usually a server without virtual-host buckets.
  const bool path_style = settings.path_style.value_or(!settings.endpoint.empty() ||
                                                       bucket.find('.') != std::string::npos);
  return std::make_unique<S3Store>(settings, std::move(endpoint), bucket, prefix, path_style);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ObjectStore>> OpenS3Store(std::string_view uri) {
  ASSIGN_OR_RETURN(const S3Settings settings, S3SettingsFromEnvironment());
  return OpenS3Store(uri, settings);
}

absl::StatusOr<std::unique_ptr<ObjectStore>> OpenS3Store(std::string_view uri,
                                                         const S3Settings& settings) {
  ASSIGN_OR_RETURN(std::unique_ptr<S3Store> store, MakeS3Store(uri, settings));
  return std::unique_ptr<ObjectStore>(std::move(store));
}

absl::Status CreateS3Bucket(std::string_view uri, const S3Settings& settings) {
  ASSIGN_OR_RETURN(std::unique_ptr<S3Store> store, MakeS3Store(uri, settings));
  return store->CreateBucket();
}

}  // namespace diablo
