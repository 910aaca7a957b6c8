// GGUF parsing.  Every count, size and offset read from the file is checked
// against the bytes that remain (and for overflow) before it is used, so a
// truncated or hostile file ends in FormatError, never in a crash or a huge
// allocation.
#include "formats/gguf.h"

#include <algorithm>
#include <cerrno>
#include <limits>
#include <set>

#include "formats/byte_cursor.h"
#include "formats/mapped_file.h"

namespace diablo::model {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr uint32_t kMaxDims = 4;         // ggml tensors have at most 4 dimensions
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 24;

enum ValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// Bytes a value of scalar type `t` occupies, or 0 for string/array/unknown.
size_t ScalarSize(uint32_t t) {
  switch (t) {
    case kU8:
    case kI8:
    case kBool:
      return 1;
    case kU16:
    case kI16:
      return 2;
    case kU32:
    case kI32:
    case kF32:
      return 4;
    case kU64:
    case kI64:
    case kF64:
      return 8;
    default:
      return 0;
  }
}

// Reads one scalar or string value of type `t` into the array-element variant.
GgufArray::value_type ReadScalar(ByteCursor& r, uint32_t t, const std::string& key) {
  switch (t) {
    case kU8:
      return uint64_t{r.Read<uint8_t>("u8 value")};
    case kI8:
      return int64_t{r.Read<int8_t>("i8 value")};
    case kU16:
      return uint64_t{r.Read<uint16_t>("u16 value")};
    case kI16:
      return int64_t{r.Read<int16_t>("i16 value")};
    case kU32:
      return uint64_t{r.Read<uint32_t>("u32 value")};
    case kI32:
      return int64_t{r.Read<int32_t>("i32 value")};
    case kF32:
      return double{r.Read<float>("f32 value")};
    case kU64:
      return r.Read<uint64_t>("u64 value");
    case kI64:
      return r.Read<int64_t>("i64 value");
    case kF64:
      return r.Read<double>("f64 value");
    case kBool: {
      uint8_t b = r.Read<uint8_t>("bool value");
      if (b > 1) r.Fail("metadata '" + key + "' has a bool that is neither 0 nor 1");
      return b == 1;
    }
    case kString:
      return r.ReadPrefixedString<uint64_t>("string value");
    default:
      r.Fail("metadata '" + key + "' has unknown value type " + std::to_string(t));
  }
}

GgufValue ReadValue(ByteCursor& r, uint32_t t, const std::string& key) {
  if (t != kArray) {
    return std::visit([](auto&& v) -> GgufValue { return v; }, ReadScalar(r, t, key));
  }
  uint32_t element_type = r.Read<uint32_t>("array element type");
  uint64_t count = r.Read<uint64_t>("array length");
  if (element_type == kArray) r.Fail("metadata '" + key + "' is an array of arrays (unsupported)");
  // Every element takes at least one byte (strings at least eight), so a
  // count larger than the bytes left is a lie; refuse before reserving.
  size_t min_size = element_type == kString ? 8 : ScalarSize(element_type);
  if (min_size == 0) {
    r.Fail("metadata '" + key + "' has unknown array element type " + std::to_string(element_type));
  }
  if (!r.Holds(count, min_size)) {
    r.Fail("metadata '" + key + "' claims " + std::to_string(count) +
           " array elements, more than the file holds");
  }
  // Each parsed element takes ~40 bytes in memory however small it is in
  // the file; real arrays (vocabularies, merges) stay far below this cap.
  if (count > kMaxArrayElements) {
    r.Fail("metadata '" + key + "' has " + std::to_string(count) + " array elements (at most " +
           std::to_string(kMaxArrayElements) + " are accepted)");
  }
  GgufArray array;
  array.reserve(count);
  for (uint64_t i = 0; i < count; ++i) array.push_back(ReadScalar(r, element_type, key));
  return array;
}

bool KnownType(uint32_t t) {
  switch (static_cast<GgmlType>(t)) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
    case GgmlType::kQ8_0:
    case GgmlType::kQ8_1:
    case GgmlType::kQ2_K:
    case GgmlType::kQ3_K:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
    case GgmlType::kQ8_K:
    case GgmlType::kBF16:
      return true;
  }
  return false;
}

}  // namespace

const GgmlTypeInfo& TypeInfo(GgmlType type) {
  static const std::map<GgmlType, GgmlTypeInfo> kInfo = {
      {GgmlType::kF32, {"F32", 1, 4}},       {GgmlType::kF16, {"F16", 1, 2}},
      {GgmlType::kBF16, {"BF16", 1, 2}},     {GgmlType::kQ4_0, {"Q4_0", 32, 18}},
      {GgmlType::kQ4_1, {"Q4_1", 32, 20}},   {GgmlType::kQ5_0, {"Q5_0", 32, 22}},
      {GgmlType::kQ5_1, {"Q5_1", 32, 24}},   {GgmlType::kQ8_0, {"Q8_0", 32, 34}},
      {GgmlType::kQ8_1, {"Q8_1", 32, 36}},   {GgmlType::kQ2_K, {"Q2_K", 256, 84}},
      {GgmlType::kQ3_K, {"Q3_K", 256, 110}}, {GgmlType::kQ4_K, {"Q4_K", 256, 144}},
      {GgmlType::kQ5_K, {"Q5_K", 256, 176}}, {GgmlType::kQ6_K, {"Q6_K", 256, 210}},
      {GgmlType::kQ8_K, {"Q8_K", 256, 292}},
  };
  return kInfo.at(type);
}

uint64_t GgufTensorInfo::elements() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;  // validated against overflow at parse time
  return n;
}

namespace {

// One entry of the tensor directory: name, shape, type, offset, all checked.
GgufTensorInfo ReadTensorInfo(ByteCursor& r, uint64_t alignment) {
  GgufTensorInfo t;
  t.name = r.ReadPrefixedString<uint64_t>("tensor name");
  uint32_t n_dims = r.Read<uint32_t>("tensor dimension count");
  if (n_dims == 0 || n_dims > kMaxDims) {
    r.Fail("tensor '" + t.name + "' has " + std::to_string(n_dims) +
           " dimensions (1 to 4 allowed)");
  }
  uint64_t elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    uint64_t dim = r.Read<uint64_t>("tensor dimension");
    if (dim == 0 || dim > (uint64_t{1} << 40) ||
        elements > std::numeric_limits<uint64_t>::max() / dim) {
      r.Fail("tensor '" + t.name + "' has an impossible shape");
    }
    elements *= dim;
    t.dims.push_back(dim);
  }
  uint32_t type = r.Read<uint32_t>("tensor type");
  if (!KnownType(type))
    r.Fail("tensor '" + t.name + "' has unknown ggml type " + std::to_string(type));
  t.type = static_cast<GgmlType>(type);
  const GgmlTypeInfo& info = TypeInfo(t.type);
  if (t.dims[0] % info.block_elements != 0) {
    r.Fail("tensor '" + t.name + "' row of " + std::to_string(t.dims[0]) +
           " elements is not a whole number of " + info.name + " blocks");
  }
  t.byte_size = elements / info.block_elements * info.block_bytes;
  t.offset = r.Read<uint64_t>("tensor offset");
  if (t.offset % alignment != 0) r.Fail("tensor '" + t.name + "' offset is not aligned");
  return t;
}

// Tensors must lie inside the data section and must not overlap.
void CheckTensorRanges(const std::vector<GgufTensorInfo>& tensors, uint64_t data_size,
                       const ByteCursor& r) {
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : tensors) {
    if (t.offset > data_size || t.byte_size > data_size - t.offset) {
      r.Fail("tensor '" + t.name + "' data (" + std::to_string(t.byte_size) + " bytes at offset " +
             std::to_string(t.offset) + ") lies beyond the end of the file");
    }
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i - 1]->offset + by_offset[i - 1]->byte_size > by_offset[i]->offset) {
      r.Fail("tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
    }
  }
}

}  // namespace

GgufFile GgufFile::Parse(std::span<const uint8_t> bytes, const std::string& source) {
  GgufFile file;
  file.source_ = source;
  file.bytes_ = bytes;
  ByteCursor r(bytes, source + ": not a valid GGUF file");

  if (r.Read<uint32_t>("magic") != kMagic) r.Fail("wrong magic (expected 'GGUF')");
  file.version_ = r.Read<uint32_t>("version");
  if (file.version_ != 2 && file.version_ != 3) {
    r.Fail("version " + std::to_string(file.version_) + " is not supported (only 2 and 3)");
  }
  uint64_t tensor_count = r.Read<uint64_t>("tensor count");
  uint64_t kv_count = r.Read<uint64_t>("metadata count");
  // Smallest possible entries: a kv is 8 (key length) + 4 (type) + 1 byte; a
  // tensor info is 8 + 4 + 4 + 8 bytes.  Larger counts cannot fit in the file.
  if (!r.Holds(kv_count, 13))
    r.Fail("metadata count " + std::to_string(kv_count) + " exceeds the file");
  if (!r.Holds(tensor_count, 24))
    r.Fail("tensor count " + std::to_string(tensor_count) + " exceeds the file");

  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string key = r.ReadPrefixedString<uint64_t>("metadata key");
    uint32_t type = r.Read<uint32_t>("metadata value type");
    GgufValue value = ReadValue(r, type, key);
    if (!file.metadata_.emplace(key, std::move(value)).second)
      r.Fail("duplicate metadata key '" + key + "'");
  }
  if (auto it = file.metadata_.find("general.alignment"); it != file.metadata_.end()) {
    const uint64_t* a = std::get_if<uint64_t>(&it->second);
    if (a == nullptr || *a == 0 || (*a & (*a - 1)) != 0 || *a > (1u << 20)) {
      r.Fail("general.alignment must be a power of two up to 1 MiB");
    }
    file.alignment_ = *a;
  }

  std::set<std::string> names;
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensorInfo t = ReadTensorInfo(r, file.alignment_);
    if (!names.insert(t.name).second) r.Fail("duplicate tensor '" + t.name + "'");
    file.tensors_.push_back(std::move(t));
  }

  uint64_t header_end = r.pos();
  file.data_offset_ = (header_end + file.alignment_ - 1) / file.alignment_ * file.alignment_;
  if (file.data_offset_ > bytes.size()) r.Fail("data section starts beyond the end of the file");
  uint64_t data_size = bytes.size() - file.data_offset_;

  CheckTensorRanges(file.tensors_, data_size, r);
  return file;
}

GgufFile GgufFile::Open(const std::string& path) {
  MappedFile mapped = MapReadOnly(path, "GGUF file");
  GgufFile file = Parse(mapped.bytes, path);
  file.mapping_ = std::move(mapped.owner);
  return file;
}

const GgufTensorInfo* GgufFile::FindTensor(const std::string& name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::span<const uint8_t> GgufFile::tensor_data(const GgufTensorInfo& info) const {
  return bytes_.subspan(data_offset_ + info.offset, info.byte_size);
}

namespace {
[[noreturn]] void MetadataError(const std::string& source, const std::string& key,
                                const char* what) {
  throw FormatError(source + ": metadata '" + key + "' " + what);
}
}  // namespace

std::string GgufFile::GetString(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) MetadataError(source_, key, "is missing");
  if (auto* s = std::get_if<std::string>(&it->second)) return *s;
  MetadataError(source_, key, "is not a string");
}

uint64_t GgufFile::GetUint(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) MetadataError(source_, key, "is missing");
  if (auto* u = std::get_if<uint64_t>(&it->second)) return *u;
  if (auto* i = std::get_if<int64_t>(&it->second); i && *i >= 0) return static_cast<uint64_t>(*i);
  MetadataError(source_, key, "is not a non-negative integer");
}

uint64_t GgufFile::GetUintOr(const std::string& key, uint64_t fallback) const {
  return Has(key) ? GetUint(key) : fallback;
}

double GgufFile::GetFloatOr(const std::string& key, double fallback) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return fallback;
  if (auto* d = std::get_if<double>(&it->second)) return *d;
  MetadataError(source_, key, "is not a number");
}

const GgufArray& GgufFile::GetArray(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) MetadataError(source_, key, "is missing");
  if (auto* a = std::get_if<GgufArray>(&it->second)) return *a;
  MetadataError(source_, key, "is not an array");
}

}  // namespace diablo::model
