// libFuzzer target for the GGUF reader (formats/gguf.h).  Any exception
// other than FormatError, any crash or sanitizer report is a bug in the parser.
#include <cstddef>
#include <cstdint>
#include <span>

#include "formats/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file = diablo::model::GgufFile::Parse({data, size}, "fuzz input");
    volatile uint8_t sink = 0;
    for (const auto& t : file.tensors()) {
      for (uint8_t b : file.tensor_data(t)) sink = sink ^ b;
      if (file.FindTensor(t.name) == nullptr) __builtin_trap();
      (void)diablo::model::TypeInfo(t.type);
      (void)t.elements();
    }
    // The typed accessors must report wrong types as FormatError too.
    for (const auto& [key, value] : file.metadata()) {
      try {
        (void)file.GetString(key);
      } catch (const diablo::model::FormatError&) {
      }
      try {
        (void)file.GetUint(key);
      } catch (const diablo::model::FormatError&) {
      }
      try {
        (void)file.GetFloatOr(key, 0.0);
      } catch (const diablo::model::FormatError&) {
      }
      try {
        (void)file.GetArray(key);
      } catch (const diablo::model::FormatError&) {
      }
    }
  } catch (const diablo::model::FormatError&) {
  }
  return 0;
}
