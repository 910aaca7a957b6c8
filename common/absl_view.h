// Debian's Abseil (2022-06) is built with its own absl::string_view, a type
// distinct from std::string_view; the storage interfaces take
// std::string_view, so calls into absl::StrCat / StrSplit convert here.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace diablo {

inline absl::string_view AbslView(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}
inline std::string_view StdView(absl::string_view s) {
  return std::string_view(s.data(), s.size());
}

}  // namespace diablo
