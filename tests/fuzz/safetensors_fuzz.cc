// libFuzzer target for the safetensors reader (formats/safetensors.h).
// Any exception other than FormatError, any crash or sanitizer report is a
// bug in the parser.
#include <cstddef>
#include <cstdint>
#include <span>

#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file = diablo::model::SafetensorsFile::Parse({data, size}, "fuzz input");
    // Touch every byte the parser vouched for, so out-of-range spans show up
    // as ASan reports rather than passing silently.
    volatile uint8_t sink = 0;
    for (const auto& t : file.tensors()) {
      for (uint8_t b : file.data(t)) sink = sink ^ b;
      if (file.Find(t.name) != &t) __builtin_trap();
      if (t.byte_size() != t.elements() * diablo::model::DtypeSize(t.dtype)) __builtin_trap();
    }
    for (const auto& [key, value] : file.metadata())
      sink = sink ^ static_cast<uint8_t>(key.size() + value.size());
  } catch (const diablo::model::FormatError&) {
  }
  return 0;
}
