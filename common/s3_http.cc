// libcurl easy-interface transfers with read/write callbacks over memory and
// file descriptors.
#include "common/s3_http.h"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/absl_view.h"

namespace diablo::s3 {
namespace {

// curl_global_init is not thread-safe; run it once, before any handle.
void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct Transfer {
  const HttpRequest* request = nullptr;
  CURL* curl = nullptr;
  int64_t sent = 0;
  HttpResponse response;
  std::string local_error;  // a failed local read or write, reported as INTERNAL
};

size_t ReadBody(char* buffer, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const HttpRequest& r = *t->request;
  const int64_t total = r.body_fd >= 0 ? r.body_length : static_cast<int64_t>(r.body.size());
  const size_t want =
      static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(size * count), total - t->sent));
  if (want == 0) return 0;
  if (r.body_fd < 0) {
    std::memcpy(buffer, r.body.data() + t->sent, want);
    t->sent += static_cast<int64_t>(want);
    return want;
  }
  ssize_t got;
  do {
    got = ::pread(r.body_fd, buffer, want, r.body_offset + t->sent);
  } while (got < 0 && errno == EINTR);
  if (got <= 0) {
    // A file that shrank under the upload must fail it, not send short.
    t->local_error =
        got < 0 ? std::strerror(errno) : "the file ended early (changed during the upload?)";
    return CURL_READFUNC_ABORT;
  }
  t->sent += got;
  return static_cast<size_t>(got);
}

// Rewinds the body when curl must send it again (a redirect or an auth retry).
int SeekBody(void* user, curl_off_t offset, int origin) {
  if (origin != SEEK_SET) return CURL_SEEKFUNC_CANTSEEK;
  static_cast<Transfer*>(user)->sent = offset;
  return CURL_SEEKFUNC_OK;
}

size_t WriteBody(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  long status = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
  if (t->request->response_fd < 0 || status < 200 || status >= 300) {
    t->response.body.append(data, n);
    return n;
  }
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::write(t->request->response_fd, data + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      t->local_error = std::strerror(errno);
      return 0;  // makes curl stop with CURLE_WRITE_ERROR
    }
    done += static_cast<size_t>(w);
  }
  return n;
}

size_t ReadHeader(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  std::string_view line(data, n);
  // A new status line (after a 100 Continue) starts a new set of headers.
  if (line.starts_with("HTTP/")) {
    t->response.headers.clear();
    return n;
  }
  const size_t colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name = absl::AsciiStrToLower(AbslView(line.substr(0, colon)));
    t->response.headers[name] =
        std::string(absl::StripAsciiWhitespace(AbslView(line.substr(colon + 1))));
  }
  return n;
}

}  // namespace

absl::StatusOr<HttpResponse> PerformHttp(const HttpRequest& request) {
  InitCurlOnce();
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) return absl::InternalError("cannot create a libcurl handle");
  Transfer t;
  t.request = &request;
  t.curl = curl.get();

  curl_slist* headers = nullptr;
  for (const auto& [name, value] : request.headers)
    headers = curl_slist_append(headers, absl::StrCat(name, ": ", value).c_str());
  // curl would otherwise wait for "100 Continue" before large bodies, a
  // needless round trip (S3 answers errors after the body just as well).
  headers = curl_slist_append(headers, "Expect:");
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(headers,
                                                                          &curl_slist_free_all);

  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for DNS timeouts
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSeconds);
  if (request.low_speed_limit) {
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, kLowSpeedBytesPerSecond);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, kLowSpeedSeconds);
  }
  if (request.timeout_seconds > 0) curl_easy_setopt(c, CURLOPT_TIMEOUT, request.timeout_seconds);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &WriteBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &ReadHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);

  const curl_off_t body_size =
      request.body_fd >= 0 ? request.body_length : static_cast<curl_off_t>(request.body.size());
  if (request.method == "PUT") {
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, body_size);
  } else if (request.method == "POST") {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, body_size);
  } else if (request.method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (request.method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  if (request.method == "PUT" || request.method == "POST") {
    curl_easy_setopt(c, CURLOPT_READFUNCTION, &ReadBody);
    curl_easy_setopt(c, CURLOPT_READDATA, &t);
    curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, &SeekBody);
    curl_easy_setopt(c, CURLOPT_SEEKDATA, &t);
  }

  char error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  const CURLcode code = curl_easy_perform(c);
  if (!t.local_error.empty())
    return absl::InternalError(
        absl::StrCat(request.method, " ", request.url, ": local I/O failed: ", t.local_error));
  if (code != CURLE_OK)
    return absl::UnavailableError(absl::StrCat(request.method, " ", request.url, " failed: ",
                                               error[0] != 0 ? error : curl_easy_strerror(code)));
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &t.response.status);
  return std::move(t.response);
}

}  // namespace diablo::s3
