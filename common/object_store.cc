// The store factory, key validation and whole-directory transfers shared by
// both backends.
#include "common/object_store.h"

#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/absl_view.h"
#include "common/file_store.h"
#include "common/s3_store.h"
#include "common/status_macros.h"

namespace diablo {

namespace fs = std::filesystem;

absl::StatusOr<std::unique_ptr<ObjectStore>> OpenObjectStore(std::string_view uri) {
  if (uri.starts_with("file://")) {
    std::string_view path = uri.substr(7);
    if (path.empty() || path[0] != '/')
      return absl::InvalidArgumentError(
          absl::StrCat("storage URI ", AbslView(uri),
                       ": file:// needs an absolute path, e.g. file:///var/lib/diablo/storage"));
    return OpenFileStore(fs::path(std::string(path)));
  }
  if (uri.starts_with("s3://")) return OpenS3Store(uri);
  return absl::InvalidArgumentError(absl::StrCat(
      "storage URI ", AbslView(uri), ": expected file:///absolute/dir or s3://bucket[/prefix]"));
}

absl::Status ValidateObjectKey(std::string_view key) {
  if (key.empty()) return absl::InvalidArgumentError("object key is empty");
  if (key.front() == '/')
    return absl::InvalidArgumentError(
        absl::StrCat("object key ", AbslView(key), " must be relative"));
  for (absl::string_view part : absl::StrSplit(AbslView(key), '/')) {
    if (part.empty() || part == "." || part == "..")
      return absl::InvalidArgumentError(
          absl::StrCat("object key ", AbslView(key), " has an empty, '.' or '..' segment"));
  }
  return absl::OkStatus();
}

absl::Status PutDirectory(ObjectStore& store, std::string_view prefix, const fs::path& dir) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    const std::string relative = fs::relative(it->path(), dir).generic_string();
    RETURN_IF_ERROR(store.PutFile(absl::StrCat(AbslView(prefix), "/", relative), it->path()));
  }
  if (ec)
    return absl::InternalError(absl::StrCat("cannot read ", dir.string(), ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status GetDirectory(ObjectStore& store, std::string_view prefix, const fs::path& dir) {
  const std::string base = absl::StrCat(AbslView(prefix), "/");
  ASSIGN_OR_RETURN(std::vector<ObjectInfo> objects, store.List(base));
  if (objects.empty())
    return absl::NotFoundError(absl::StrCat("nothing stored under ", base, " in ", store.uri()));
  for (const ObjectInfo& object : objects) {
    RETURN_IF_ERROR(ValidateObjectKey(object.key));
    RETURN_IF_ERROR(store.GetFile(object.key, dir / object.key.substr(base.size())));
  }
  return absl::OkStatus();
}

}  // namespace diablo

namespace diablo {

absl::StatusOr<ObjectUri> SplitObjectUri(std::string_view uri) {
  if (!uri.starts_with("s3://"))
    return absl::InvalidArgumentError(
        absl::StrCat(AbslView(uri), ": expected an s3://bucket/key URI"));
  const std::string rest(uri.substr(5));
  const size_t slash = rest.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == rest.size())
    return absl::InvalidArgumentError(
        absl::StrCat(AbslView(uri), ": expected s3://bucket/key (a bucket and a key)"));
  ObjectUri split{absl::StrCat("s3://", rest.substr(0, slash)), rest.substr(slash + 1)};
  while (!split.key.empty() && split.key.back() == '/') split.key.pop_back();
  RETURN_IF_ERROR(ValidateObjectKey(split.key));
  return split;
}

}  // namespace diablo
