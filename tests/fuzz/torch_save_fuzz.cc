// libFuzzer target for the torch.save reader (formats/torch_save_reader.h):
// the same input is tried as a bare pickle (the restricted interpreter) and as
// a whole archive (zip reader, storages, view bounds).  Any exception other
// than FormatError, any crash or sanitizer report is a bug in the reader.
#include <cstddef>
#include <cstdint>
#include <span>

#include "formats/gguf.h"
#include "formats/torch_save_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> bytes(data, size);
  try {
    (void)diablo::peft::UnpickleTensorDict(bytes, "fuzz pickle");
  } catch (const diablo::model::FormatError&) {
  }
  try {
    auto ckpt = diablo::peft::ParseTorchCheckpoint(bytes, "fuzz archive");
    volatile uint8_t sink = 0;
    for (const auto& [key, storage] : ckpt.storages) {
      for (uint8_t b : storage) sink = sink ^ b;
    }
  } catch (const diablo::model::FormatError&) {
  }
  return 0;
}
