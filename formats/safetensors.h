// safetensors reader and writer in plain C++ (no LibTorch): the format of
// Hugging Face checkpoints and of our adapter files.  The reader validates the
// whole header against the file before anything is trusted; the writer is
// deterministic and atomic.
//
// Layout:
//   u64 N (little-endian)       length of the header in bytes
//   N bytes of UTF-8 JSON       an object, starting with '{', possibly padded
//                               with trailing spaces:
//     { "<tensor name>": { "dtype": "F32", "shape": [d0, d1, ...],
//                          "data_offsets": [begin, end] },
//       ...,
//       "__metadata__": { "<key>": "<string value>", ... } }   (optional)
//   data section                the rest of the file
// Offsets are relative to the start of the data section, `end` is exclusive,
// and end - begin must equal product(shape) * size(dtype) (a shape of [] is a
// scalar, one element).  The tensors cover the data section exactly, without
// overlaps or holes, as the reference implementation requires.  Data are
// row-major (C order) and little-endian.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "formats/gguf.h"  // FormatError

namespace diablo::model {

// Element types of the format (names as written in the header).
enum class SafetensorsDtype {
  kBool,
  kU8,
  kI8,
  kF8_E5M2,
  kF8_E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};
const char* DtypeName(SafetensorsDtype dtype);  // "F32", "BF16", ...
size_t DtypeSize(SafetensorsDtype dtype);       // bytes per element
std::optional<SafetensorsDtype> ParseDtypeName(std::string_view name);

struct SafetensorsTensorInfo {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;  // PyTorch order: shape[0] outermost
  uint64_t begin = 0;          // data offsets, validated to lie inside the file
  uint64_t end = 0;
  uint64_t elements() const;  // product of shape (validated against overflow)
  uint64_t byte_size() const { return end - begin; }
};

// The largest header the reader accepts; real checkpoints stay far below it
// and a larger claim is a sign of a corrupt or hostile file.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

// A parsed safetensors file.  Tensor data are not copied: data() points into
// the bytes given to Parse, or into the read-only mapping made by Open, which
// this object (and every copy of mapping()) keeps alive.
class SafetensorsFile {
 public:
  // Maps the file read-only and parses it.  Throws FormatError (naming the
  // file) when it cannot be opened or is malformed.
  static SafetensorsFile Open(const std::string& path);
  // Parses bytes already in memory; `source` names them in error messages.
  // The caller keeps `bytes` alive as long as data() is used.
  static SafetensorsFile Parse(std::span<const uint8_t> bytes, const std::string& source);

  const std::string& source() const { return source_; }
  // Tensors sorted by name.
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  const SafetensorsTensorInfo* Find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::span<const uint8_t> data(const SafetensorsTensorInfo& info) const;
  // Owner of the mapping made by Open (null after Parse); hold a copy to keep
  // data() valid beyond this object's lifetime (zero-copy tensor views).
  std::shared_ptr<const void> mapping() const { return mapping_; }

 private:
  std::string source_;
  std::shared_ptr<const void> mapping_;
  std::span<const uint8_t> bytes_;
  uint64_t data_offset_ = 0;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write.  `data` must hold exactly product(shape) * size(dtype)
// bytes in row-major little-endian order and stay valid during the write.
struct SafetensorsEntry {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> data;
};

// The file's bytes up to the start of the data section (length prefix and the
// JSON header padded with spaces to a multiple of 8), for `entries` laid out
// in the order WriteSafetensors uses.  The output depends only on the
// arguments: names sorted, offsets ordered by element size (largest first, so
// every tensor is naturally aligned) and then by name.  Throws
// std::invalid_argument for duplicate or reserved names, negative dimensions
// or a data size that does not match the shape.
std::string EncodeSafetensorsHeader(std::vector<SafetensorsEntry>& entries,
                                    const std::map<std::string, std::string>& metadata);

// Writes `entries` to `path` atomically: a temporary file in the same
// directory, fsync, rename over `path`, fsync of the directory.  Readers see
// either the old file or the complete new one.  Throws std::invalid_argument
// (bad entries, as above) or std::runtime_error naming the path and the
// system error.
void WriteSafetensors(const std::string& path, std::vector<SafetensorsEntry> entries,
                      const std::map<std::string, std::string>& metadata = {});

// Writes the concatenation of `pieces` to `path` with the same atomic
// protocol (also used for the JSON files that accompany safetensors files).
// Throws std::runtime_error naming the path and the system error.
void WriteFileAtomically(const std::string& path, std::span<const std::span<const uint8_t>> pieces);

}  // namespace diablo::model
