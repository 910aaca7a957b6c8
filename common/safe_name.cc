#include "common/safe_name.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/absl_view.h"

namespace diablo {
namespace {

absl::Status Refuse(std::string_view name, std::string_view what, std::string_view rule) {
  // Escaped: a hostile name must not drive the reader's terminal.
  std::string shown = absl::CHexEscape(AbslView(name.substr(0, 120)));
  if (name.size() > 120) shown += "...";
  return absl::InvalidArgumentError(
      absl::StrCat(AbslView(what), " \"", shown, "\" ", AbslView(rule)));
}

absl::Status ValidateSegment(std::string_view segment, std::string_view name,
                             std::string_view what) {
  if (segment.empty() || segment == "." || segment == "..")
    return Refuse(name, what,
                  "has an empty, '.' or '..' part: names must stay inside their folder");
  if (segment.size() > kMaxNameSegmentBytes)
    return Refuse(name, what,
                  absl::StrCat("has a part longer than ", kMaxNameSegmentBytes, " bytes"));
  for (char c : segment) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) return Refuse(name, what, "contains a control character");
    if (c == '\\') return Refuse(name, what, "contains a backslash; use '/' between folders");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRelativePath(std::string_view name, std::string_view what) {
  if (name.empty()) return Refuse(name, what, "is empty");
  if (name.size() > kMaxRelativePathBytes)
    return Refuse(name, what, absl::StrCat("is longer than ", kMaxRelativePathBytes, " bytes"));
  if (name.front() == '/') return Refuse(name, what, "is absolute: it must be a relative path");
  for (absl::string_view segment : absl::StrSplit(AbslView(name), '/')) {
    if (absl::Status ok = ValidateSegment(StdView(segment), name, what); !ok.ok()) return ok;
  }
  return absl::OkStatus();
}

absl::Status ValidateFileName(std::string_view name, std::string_view what) {
  if (name.find('/') != std::string_view::npos)
    return Refuse(name, what, "contains '/': it must be a file name, not a path");
  return ValidateRelativePath(name, what);
}

}  // namespace diablo
