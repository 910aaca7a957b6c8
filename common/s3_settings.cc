// S3Settings from the environment: the AWS_* variables every S3 tool reads
// and the DIABLO_S3_* ones of this service (docs/storage.md).
#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/s3_store.h"
#include "common/status_macros.h"

namespace diablo {
namespace {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

absl::Status ReadBytesVariable(const char* name, int64_t* out) {
  const std::string text = Env(name);
  if (text.empty()) return absl::OkStatus();
  if (!absl::SimpleAtoi(text, out) || *out < 0)
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be a number of bytes, got '", text, "'"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<S3Settings> S3SettingsFromEnvironment() {
  S3Settings settings;
  settings.access_key_id = Env("AWS_ACCESS_KEY_ID");
  settings.secret_access_key = Env("AWS_SECRET_ACCESS_KEY");
  settings.session_token = Env("AWS_SESSION_TOKEN");
  // AWS_REGION is what the SDKs read first; older tools set only the other.
  if (!Env("AWS_REGION").empty())
    settings.region = Env("AWS_REGION");
  else if (!Env("AWS_DEFAULT_REGION").empty())
    settings.region = Env("AWS_DEFAULT_REGION");
  settings.endpoint = Env("DIABLO_S3_ENDPOINT");
  const std::string path_style = absl::AsciiStrToLower(Env("DIABLO_S3_PATH_STYLE"));
  if (path_style == "1" || path_style == "true" || path_style == "yes")
    settings.path_style = true;
  else if (path_style == "0" || path_style == "false" || path_style == "no")
    settings.path_style = false;
  else if (!path_style.empty())
    return absl::InvalidArgumentError(
        absl::StrCat("DIABLO_S3_PATH_STYLE must be 1 or 0, got '", path_style, "'"));
  RETURN_IF_ERROR(ReadBytesVariable("DIABLO_S3_MULTIPART_THRESHOLD_BYTES",
                                    &settings.multipart_threshold_bytes));
  RETURN_IF_ERROR(ReadBytesVariable("DIABLO_S3_PART_BYTES", &settings.part_bytes));
  return settings;
}

}  // namespace diablo
