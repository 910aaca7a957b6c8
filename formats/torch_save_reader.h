// Reads dictionaries of tensors saved with torch.save (the paper's reference
// adapters) without running Python's pickle: a restricted interpreter accepts
// only what such a dictionary needs and refuses everything else.  Plain C++.
//
// Archive layout (a zip of stored entries, all under one top folder <a>):
//   <a>/data.pkl        pickle (protocol 2 by default) of the dictionary
//   <a>/data/<key>      raw little-endian bytes of storage <key>
//   <a>/byteorder       "little" (absent in old files, which are little-endian)
//   <a>/version, <a>/.format_version, <a>/.storage_alignment, <a>/.data/...
// In data.pkl a tensor is
//   torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
//                                   requires_grad, backward_hooks[, metadata])
// and `storage` is a persistent id, the tuple
//   ("storage", torch.<Type>Storage, "<key>", "<location>", <element count>).
// A tensor is a strided view into its storage; several tensors may share one.
//
// Accepted opcodes: PROTO FRAME STOP MARK POP POP_MARK, EMPTY_DICT EMPTY_TUPLE
// EMPTY_LIST TUPLE TUPLE1-3 SETITEM SETITEMS APPEND APPENDS, BINPUT
// LONG_BINPUT MEMOIZE BINGET LONG_BINGET, BININT BININT1 BININT2 LONG1
// BINFLOAT NONE NEWTRUE NEWFALSE, BINUNICODE SHORT_BINUNICODE BINUNICODE8,
// GLOBAL STACK_GLOBAL REDUCE BUILD BINPERSID.  Accepted globals:
// collections.OrderedDict, torch._utils._rebuild_tensor_v2,
// torch._utils._rebuild_parameter and the torch.<Type>Storage classes.
// REDUCE may call only the first three; BUILD may only set attributes of a
// dictionary (nn.Module.state_dict() attaches `_metadata`).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "formats/safetensors.h"  // SafetensorsDtype
#include "formats/zip_reader.h"

namespace diablo::peft {

// One entry of the dictionary: a strided view into a storage.
struct TorchTensorRecord {
  std::string name;     // the dictionary key
  std::string storage;  // storage key (<a>/data/<storage>)
  model::SafetensorsDtype dtype = model::SafetensorsDtype::kF32;
  uint64_t storage_elements = 0;  // element count of the storage
  int64_t offset = 0;             // storage offset, in elements
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;  // in elements
};

// Runs the restricted interpreter over a data.pkl that must hold a dict (or
// OrderedDict) from strings to tensors; returns its entries in file order.
// Throws model::FormatError naming `source`, the byte offset and, for a
// refused global, its "module.name".
std::vector<TorchTensorRecord> UnpickleTensorDict(std::span<const uint8_t> pickle,
                                                  const std::string& source);

// A torch.save archive: its tensors, validated against their storages.
struct TorchCheckpoint {
  ZipArchive archive;  // owns the bytes the storages point into
  std::vector<TorchTensorRecord> tensors;
  // Storage key -> its bytes (exactly storage_elements * element size).
  std::map<std::string, std::span<const uint8_t>> storages;
};

// Opens and validates a torch.save file: the archive, the pickle, every
// storage's size and every view's bounds.  Throws model::FormatError.
TorchCheckpoint ReadTorchCheckpoint(const std::string& path);
// The same for bytes in memory (kept alive by the caller).
TorchCheckpoint ParseTorchCheckpoint(std::span<const uint8_t> bytes, const std::string& source);

}  // namespace diablo::peft
