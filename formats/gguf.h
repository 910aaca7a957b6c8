// GGUF (v2 and v3) reader: metadata and tensor directory of a llama.cpp model
// file, validated against the file's size before anything is trusted.
//
// Layout (all little-endian):
//   u32 magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv_count x { string key | u32 value_type | value }
//   tensor_count x { string name | u32 n_dims | u64 dims[n_dims] | u32 ggml_type | u64 offset }
//   padding to `general.alignment` (default 32) | tensor data
// A string is u64 length + bytes (no terminator); an array value is
// u32 element_type | u64 count | elements.  Tensor offsets are relative to the
// start of the data section and must be multiples of the alignment.
// dims[0] is the fastest-varying (innermost) dimension, the reverse of PyTorch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace diablo::model {

// Thrown for any malformed or unsupported model file; the message names the
// file, the item and what is wrong.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ggml tensor types this reader knows the size of (values as in the format).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kBF16 = 30,
};

struct GgmlTypeInfo {
  const char* name;
  uint32_t block_elements;  // elements per quantisation block (1 for plain floats)
  uint32_t block_bytes;     // bytes per block
};
// REQUIRES: `type` is a known GgmlType (the parser rejects unknown ones).
const GgmlTypeInfo& TypeInfo(GgmlType type);

using GgufArray = std::vector<std::variant<uint64_t, int64_t, double, bool, std::string>>;
// One metadata value.  Integers keep their signedness; all floats are double.
using GgufValue = std::variant<uint64_t, int64_t, double, bool, std::string, GgufArray>;

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // GGUF order: dims[0] innermost
  GgmlType type;
  uint64_t offset = 0;     // from the start of the data section
  uint64_t byte_size = 0;  // validated to lie inside the file
  uint64_t elements() const;
};

// A parsed GGUF file.  Tensor data is not copied: tensor_data() points into the
// bytes given to Parse (or into the mapping made by Open), which this object
// keeps alive when it made the mapping itself.
class GgufFile {
 public:
  // Maps the file read-only and parses it.  Throws FormatError.
  static GgufFile Open(const std::string& path);
  // Parses bytes already in memory; `source` names them in error messages.
  // The caller keeps `bytes` alive as long as tensor_data() is used.
  static GgufFile Parse(std::span<const uint8_t> bytes, const std::string& source);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(const std::string& name) const;
  std::span<const uint8_t> tensor_data(const GgufTensorInfo& info) const;

  // Typed metadata look-ups; throw FormatError naming the key when it is
  // missing or of another type.  The *Or variants return `fallback` if missing.
  std::string GetString(const std::string& key) const;
  uint64_t GetUint(const std::string& key) const;
  uint64_t GetUintOr(const std::string& key, uint64_t fallback) const;
  double GetFloatOr(const std::string& key, double fallback) const;
  const GgufArray& GetArray(const std::string& key) const;
  bool Has(const std::string& key) const { return metadata_.count(key) != 0; }

 private:
  std::string source_;
  std::shared_ptr<const void> mapping_;  // owns the mmap when Open made one
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace diablo::model
