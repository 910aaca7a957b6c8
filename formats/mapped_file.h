// Read-only memory mapping of a whole file: how every model and adapter file
// parser (GGUF, safetensors, zip) gets at its bytes without copying them.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace diablo::model {

struct MappedFile {
  std::shared_ptr<const void> owner;  // unmaps when the last copy goes
  std::span<const uint8_t> bytes;
};

// Maps `path` read-only.  Throws FormatError (gguf.h) when the file cannot be
// opened or mapped, is not a regular file, or is empty; `kind` names the
// expected format in that last message ("GGUF file", "zip archive").
MappedFile MapReadOnly(const std::string& path, const std::string& kind);

}  // namespace diablo::model
