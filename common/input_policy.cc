#include "common/input_policy.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/absl_view.h"

namespace diablo {
namespace {

namespace fs = std::filesystem;

std::string WithoutTrailingSlashes(std::string_view text) {
  std::string out(text);
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// Symlinks and ".." resolved as far as the path exists (the rest lexically).
fs::path Resolved(const fs::path& path) {
  std::error_code ec;
  fs::path resolved = fs::weakly_canonical(path, ec);
  return ec ? path.lexically_normal() : resolved;
}

absl::Status Denied(std::string_view field, std::string_view value, std::string_view rule) {
  return absl::PermissionDeniedError(
      absl::StrCat("spec.", AbslView(field), ": ", AbslView(value), ": ", AbslView(rule)));
}

}  // namespace

bool IsWithin(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p) {
    if (r->empty()) continue;  // a trailing separator
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

bool IsUnderPrefix(std::string_view uri, std::string_view prefix) {
  const std::string base = WithoutTrailingSlashes(prefix);
  return uri == base || (uri.size() > base.size() && uri.substr(0, base.size()) == base &&
                         uri[base.size()] == '/');
}

absl::Status CheckInputSpelling(std::string_view field, std::string_view value) {
  auto refuse = [&](std::string_view rule) { return Denied(field, value, rule); };
  for (char c : value) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) return refuse("contains a control character");
    if (c == '%') return refuse("uses percent-encoding, which inputs never need: write it plainly");
    if (c == '\\') return refuse("contains a backslash");
  }
  std::string_view rest = value;
  if (const size_t scheme = rest.find("://"); scheme != std::string_view::npos)
    rest.remove_prefix(scheme + 3);
  size_t start = rest.starts_with("/") ? 1 : 0;
  while (start <= rest.size()) {
    size_t end = rest.find('/', start);
    if (end == std::string_view::npos) end = rest.size();
    const std::string_view segment = rest.substr(start, end - start);
    const bool last = end == rest.size();
    if ((segment.empty() && !last) || segment == "." || segment == "..")
      return refuse("has an empty, '.' or '..' part: name the file itself");
    start = end + 1;
  }
  return absl::OkStatus();
}

absl::Status CheckUploadKey(std::string_view field, std::string_view key) {
  const std::string_view id =
      key.starts_with(kUploadKeyPrefix) ? key.substr(kUploadKeyPrefix.size()) : std::string_view();
  if (id.empty() || id.find('/') != std::string_view::npos || id == "." || id == "..")
    return Denied(field, key, "a lease may name only uploaded files (files/<id>) in storage");
  return absl::OkStatus();
}

absl::StatusOr<InputPolicy> InputPolicy::Parse(std::string_view text, std::string_view source) {
  auto bad = [&](std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(AbslView(source), ": ", AbslView(what)));
  };
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return bad("not a JSON object");
  for (const auto& [key, unused] : doc.items())
    if (key != "tenants") return bad(absl::StrCat("unknown key \"", key, "\" (known: tenants)"));
  InputPolicy policy;
  const auto tenants = doc.find("tenants");
  if (tenants == doc.end()) return policy;
  if (!tenants->is_object()) return bad("\"tenants\" must be an object of tenant names");
  for (const auto& [tenant, grants] : tenants->items()) {
    if (!grants.is_object()) return bad(absl::StrCat("tenants.", tenant, " must be an object"));
    std::vector<std::string> lists[2];
    const char* keys[2] = {"object_prefixes", "local_roots"};
    for (int i = 0; i < 2; ++i) {
      const auto list = grants.find(keys[i]);
      if (list == grants.end()) continue;
      if (!list->is_array())
        return bad(absl::StrCat("tenants.", tenant, ".", keys[i], " must be a list"));
      for (const auto& entry : *list) {
        if (!entry.is_string() || entry.get<std::string>().empty())
          return bad(
              absl::StrCat("tenants.", tenant, ".", keys[i], " holds a non-string or empty entry"));
        lists[i].push_back(entry.get<std::string>());
      }
    }
    for (const std::string& prefix : lists[0])
      if (!prefix.starts_with("s3://") || !CheckInputSpelling("grant", prefix).ok())
        return bad(absl::StrCat("tenants.", tenant, ".object_prefixes: \"", prefix,
                                "\" must be a plain s3://bucket[/prefix]"));
    for (const std::string& root : lists[1])
      if (root.empty() || root.front() != '/' || !CheckInputSpelling("grant", root).ok())
        return bad(absl::StrCat("tenants.", tenant, ".local_roots: \"", root,
                                "\" must be a plain absolute path"));
    policy.Grant(tenant, std::move(lists[0]), std::move(lists[1]));
  }
  return policy;
}

absl::StatusOr<InputPolicy> InputPolicy::Load(const fs::path& file) {
  std::ifstream in(file);
  if (!in) return absl::NotFoundError(absl::StrCat(file.string(), ": cannot be read"));
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), file.string());
}

void InputPolicy::Grant(const std::string& tenant, std::vector<std::string> object_prefixes,
                        std::vector<std::string> local_roots) {
  Grants& grants = tenants_[tenant];
  for (std::string& prefix : object_prefixes)
    grants.object_prefixes.push_back(WithoutTrailingSlashes(prefix));
  for (const std::string& root : local_roots) grants.local_roots.push_back(Resolved(root));
}

void InputPolicy::Protect(std::string_view uri_or_path) {
  std::string_view text = uri_or_path;
  if (text.starts_with("file://")) text.remove_prefix(7);
  if (text.starts_with("s3://"))
    protected_objects_.push_back(WithoutTrailingSlashes(text));
  else if (!text.empty())
    protected_paths_.push_back(Resolved(fs::path(text)));
}

absl::Status InputPolicy::CheckObject(std::string_view tenant, std::string_view field,
                                      std::string_view uri) const {
  if (absl::Status spelling = CheckInputSpelling(field, uri); !spelling.ok()) return spelling;
  for (const std::string& own : protected_objects_)
    if (IsUnderPrefix(uri, own))
      return Denied(field, uri, "the service's own storage is never a job's input");
  const auto grants = tenants_.find(tenant);
  if (grants != tenants_.end())
    for (const std::string& prefix : grants->second.object_prefixes)
      if (IsUnderPrefix(uri, prefix)) return absl::OkStatus();
  return Denied(field, uri,
                "object URIs must lie under a prefix the operator grants this tenant "
                "(diablo-scheduler --input-grants); upload the file instead");
}

absl::Status InputPolicy::CheckNotProtected(std::string_view field,
                                            std::string_view uri_or_path) const {
  if (absl::Status spelling = CheckInputSpelling(field, uri_or_path); !spelling.ok())
    return spelling;
  std::string_view text = uri_or_path;
  if (text.starts_with("file://")) text.remove_prefix(7);
  if (text.starts_with("s3://")) {
    for (const std::string& own : protected_objects_)
      if (IsUnderPrefix(text, own))
        return Denied(field, uri_or_path, "the service's own storage is never a job's input");
    return absl::OkStatus();
  }
  const fs::path resolved = Resolved(fs::path(text));
  for (const fs::path& own : protected_paths_)
    if (IsWithin(resolved, own))
      return Denied(field, uri_or_path, "this worker's and the service's files are never inputs");
  return absl::OkStatus();
}

absl::StatusOr<std::string> InputPolicy::CheckLocal(std::string_view tenant, std::string_view field,
                                                    std::string_view path) const {
  if (absl::Status spelling = CheckInputSpelling(field, path); !spelling.ok()) return spelling;
  const fs::path resolved = Resolved(fs::path(path));
  for (const fs::path& own : protected_paths_)
    if (IsWithin(resolved, own))
      return Denied(field, path, "the service's own files are never a job's input");
  const auto grants = tenants_.find(tenant);
  if (grants != tenants_.end())
    for (const fs::path& root : grants->second.local_roots)
      if (IsWithin(resolved, root)) return resolved.string();
  return Denied(field, path,
                "local paths must lie under a root the operator grants this tenant "
                "(diablo-scheduler --input-grants), symlinks resolved; upload the file instead");
}

}  // namespace diablo
