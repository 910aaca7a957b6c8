// safetensors parsing and writing.  The JSON header is parsed with a callback
// that refuses duplicate keys and nesting deeper than the format needs, then
// every tensor entry is checked (dtype, shape, offsets, size) and the entries
// together must tile the data section exactly.
#include "formats/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "formats/byte_cursor.h"
#include "formats/mapped_file.h"

namespace diablo::model {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data are little-endian; a big-endian host would need byte swaps");

using Json = nlohmann::json;

struct DtypeInfo {
  SafetensorsDtype dtype;
  const char* name;
  size_t size;
};
constexpr DtypeInfo kDtypes[] = {
    {SafetensorsDtype::kBool, "BOOL", 1},       {SafetensorsDtype::kU8, "U8", 1},
    {SafetensorsDtype::kI8, "I8", 1},           {SafetensorsDtype::kF8_E5M2, "F8_E5M2", 1},
    {SafetensorsDtype::kF8_E4M3, "F8_E4M3", 1}, {SafetensorsDtype::kI16, "I16", 2},
    {SafetensorsDtype::kU16, "U16", 2},         {SafetensorsDtype::kF16, "F16", 2},
    {SafetensorsDtype::kBF16, "BF16", 2},       {SafetensorsDtype::kI32, "I32", 4},
    {SafetensorsDtype::kU32, "U32", 4},         {SafetensorsDtype::kF32, "F32", 4},
    {SafetensorsDtype::kF64, "F64", 8},         {SafetensorsDtype::kI64, "I64", 8},
    {SafetensorsDtype::kU64, "U64", 8},
};

const DtypeInfo& Info(SafetensorsDtype dtype) {
  for (const auto& info : kDtypes) {
    if (info.dtype == dtype) return info;
  }
  throw std::invalid_argument("unknown SafetensorsDtype " +
                              std::to_string(static_cast<int>(dtype)));
}

constexpr const char kMetadataKey[] = "__metadata__";
// Top object -> tensor object -> shape array: nothing in the format nests
// deeper, and refusing more keeps hostile headers from building deep trees.
constexpr int kMaxJsonDepth = 3;

class HeaderError {
 public:
  explicit HeaderError(const std::string& source) : source_(source) {}
  [[noreturn]] void Fail(const std::string& what) const {
    throw FormatError(source_ + ": not a valid safetensors file: " + what);
  }
  [[noreturn]] void FailTensor(const std::string& name, const std::string& what) const {
    Fail("tensor '" + name + "': " + what);
  }

 private:
  const std::string& source_;
};

// Parses the header text, refusing duplicate keys in any object (nlohmann
// would silently keep the last one) and excessive nesting.
Json ParseHeaderJson(std::string_view text, const HeaderError& err) {
  std::vector<std::set<std::string>> seen_keys;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth) err.Fail("the JSON header nests deeper than the format allows");
        if (event == Json::parse_event_t::object_start) seen_keys.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        seen_keys.pop_back();
        break;
      case Json::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (!seen_keys.back().insert(key).second) {
          err.Fail("the JSON header repeats the key '" + key + "'");
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), callback);
  } catch (const Json::exception& e) {
    err.Fail(std::string("the header is not valid JSON (") + e.what() + ")");
  }
}

// A non-negative JSON integer, or an error naming `what`.
uint64_t ReadUint(const Json& value, const std::string& name, const char* what,
                  const HeaderError& err) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer()) err.FailTensor(name, std::string(what) + " is negative");
  err.FailTensor(name, std::string(what) + " is not a non-negative integer");
}

SafetensorsTensorInfo ReadTensorInfo(const std::string& name, const Json& entry,
                                     const HeaderError& err) {
  if (!entry.is_object()) err.FailTensor(name, "the entry is not a JSON object");
  for (const auto& [key, _] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      err.FailTensor(name, "unknown field '" + key + "'");
    }
  }
  SafetensorsTensorInfo info;
  info.name = name;

  auto dtype = entry.find("dtype");
  if (dtype == entry.end() || !dtype->is_string())
    err.FailTensor(name, "'dtype' is missing or not a string");
  std::optional<SafetensorsDtype> parsed = ParseDtypeName(dtype->get_ref<const std::string&>());
  if (!parsed) err.FailTensor(name, "unknown dtype '" + dtype->get<std::string>() + "'");
  info.dtype = *parsed;

  auto shape = entry.find("shape");
  if (shape == entry.end() || !shape->is_array())
    err.FailTensor(name, "'shape' is missing or not an array");
  uint64_t elements = 1;
  for (const Json& d : *shape) {
    uint64_t dim = ReadUint(d, name, "a shape dimension", err);
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      err.FailTensor(name, "shape dimension " + std::to_string(dim) + " is impossibly large");
    }
    info.shape.push_back(static_cast<int64_t>(dim));
  }
  // Zero-sized tensors are legal; otherwise the product (and its byte size)
  // must fit in 64 bits before it can be compared with the offsets.
  if (std::find(info.shape.begin(), info.shape.end(), 0) != info.shape.end()) {
    elements = 0;
  } else {
    for (int64_t dim : info.shape) {
      if (elements > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(dim)) {
        err.FailTensor(name, "the shape's element count overflows 64 bits");
      }
      elements *= static_cast<uint64_t>(dim);
    }
  }
  const size_t element_size = DtypeSize(info.dtype);
  if (elements > std::numeric_limits<uint64_t>::max() / element_size) {
    err.FailTensor(name, "the shape's byte size overflows 64 bits");
  }

  auto offsets = entry.find("data_offsets");
  if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2) {
    err.FailTensor(name, "'data_offsets' is missing or not a [begin, end] pair");
  }
  info.begin = ReadUint((*offsets)[0], name, "the data begin offset", err);
  info.end = ReadUint((*offsets)[1], name, "the data end offset", err);
  if (info.end < info.begin) {
    err.FailTensor(name, "data_offsets [" + std::to_string(info.begin) + ", " +
                             std::to_string(info.end) + "] end before they begin");
  }
  if (info.end - info.begin != elements * element_size) {
    err.FailTensor(name, "data_offsets span " + std::to_string(info.end - info.begin) +
                             " bytes but the shape and dtype " + DtypeName(info.dtype) + " need " +
                             std::to_string(elements * element_size));
  }
  return info;
}

std::map<std::string, std::string> ReadMetadata(const Json& value, const HeaderError& err) {
  if (!value.is_object()) err.Fail("'__metadata__' is not a JSON object");
  std::map<std::string, std::string> metadata;
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string()) err.Fail("'__metadata__' value of '" + key + "' is not a string");
    metadata.emplace(key, v.get<std::string>());
  }
  return metadata;
}

// The tensors must tile [0, data_size) exactly: no overlap, no hole, nothing
// beyond the end.
void CheckCoverage(const std::vector<SafetensorsTensorInfo>& tensors, uint64_t data_size,
                   const HeaderError& err) {
  std::vector<const SafetensorsTensorInfo*> by_offset;
  for (const auto& t : tensors) {
    if (t.end > data_size) {
      err.FailTensor(t.name, "data_offsets [" + std::to_string(t.begin) + ", " +
                                 std::to_string(t.end) + "] lie beyond the data section of " +
                                 std::to_string(data_size) + " bytes (truncated file?)");
    }
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  const SafetensorsTensorInfo* previous = nullptr;
  for (const auto* t : by_offset) {
    if (t->begin < covered) {
      err.Fail("tensors '" + previous->name + "' and '" + t->name + "' overlap");
    }
    if (t->begin > covered) {
      err.Fail("bytes [" + std::to_string(covered) + ", " + std::to_string(t->begin) +
               ") of the data section belong to no tensor");
    }
    covered = t->end;
    previous = t;
  }
  if (covered != data_size) {
    err.Fail("the data section has " + std::to_string(data_size - covered) +
             " trailing bytes that belong to no tensor");
  }
}

std::runtime_error SystemError(const std::string& what, const std::string& path) {
  return std::runtime_error("cannot " + what + " " + path + ": " + std::strerror(errno));
}

void WriteAll(int fd, std::span<const uint8_t> bytes, const std::string& path) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SystemError("write", path);
    }
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
}

std::string ParentDirectory(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

const char* DtypeName(SafetensorsDtype dtype) { return Info(dtype).name; }
size_t DtypeSize(SafetensorsDtype dtype) { return Info(dtype).size; }

std::optional<SafetensorsDtype> ParseDtypeName(std::string_view name) {
  for (const auto& info : kDtypes) {
    if (name == info.name) return info.dtype;
  }
  return std::nullopt;
}

uint64_t SafetensorsTensorInfo::elements() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);  // validated at parse time
  return n;
}

SafetensorsFile SafetensorsFile::Parse(std::span<const uint8_t> bytes, const std::string& source) {
  SafetensorsFile file;
  file.source_ = source;
  file.bytes_ = bytes;
  HeaderError err(file.source_);

  if (bytes.size() < 8) {
    err.Fail("the file has " + std::to_string(bytes.size()) +
             " bytes, fewer than the 8-byte header length");
  }
  // Little-endian on any host; the size check above keeps the cursor's own
  // truncation message for files that are not safetensors at all.
  ByteCursor cursor(bytes, source + ": not a valid safetensors file");
  const uint64_t header_size = cursor.Read<uint64_t>("the header length");
  if (header_size > kMaxSafetensorsHeaderBytes) {
    err.Fail("the header claims " + std::to_string(header_size) + " bytes, more than the " +
             std::to_string(kMaxSafetensorsHeaderBytes) + "-byte limit");
  }
  if (header_size > bytes.size() - 8) {
    err.Fail("the header claims " + std::to_string(header_size) + " bytes but only " +
             std::to_string(bytes.size() - 8) + " follow (truncated file?)");
  }
  std::string_view text(reinterpret_cast<const char*>(bytes.data() + 8), header_size);
  if (text.empty() || text.front() != '{') err.Fail("the header does not start with '{'");
  Json header = ParseHeaderJson(text, err);
  if (!header.is_object()) err.Fail("the header is not a JSON object");

  file.data_offset_ = 8 + header_size;
  for (const auto& [name, entry] : header.items()) {
    if (name == kMetadataKey) {
      file.metadata_ = ReadMetadata(entry, err);
    } else {
      file.tensors_.push_back(ReadTensorInfo(name, entry, err));
    }
  }
  // nlohmann keeps object keys sorted, so tensors_ is already sorted by name.
  CheckCoverage(file.tensors_, bytes.size() - file.data_offset_, err);
  return file;
}

SafetensorsFile SafetensorsFile::Open(const std::string& path) {
  MappedFile mapped = MapReadOnly(path, "safetensors file");
  SafetensorsFile file = Parse(mapped.bytes, path);
  file.mapping_ = std::move(mapped.owner);
  return file;
}

const SafetensorsTensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = std::lower_bound(
      tensors_.begin(), tensors_.end(), name,
      [](const SafetensorsTensorInfo& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

std::span<const uint8_t> SafetensorsFile::data(const SafetensorsTensorInfo& info) const {
  return bytes_.subspan(data_offset_ + info.begin, info.end - info.begin);
}

std::string EncodeSafetensorsHeader(std::vector<SafetensorsEntry>& entries,
                                    const std::map<std::string, std::string>& metadata) {
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    size_t sa = DtypeSize(a.dtype), sb = DtypeSize(b.dtype);
    return sa != sb ? sa > sb : a.name < b.name;
  });
  Json header = Json::object();
  uint64_t offset = 0;
  for (const auto& e : entries) {
    if (e.name == kMetadataKey)
      throw std::invalid_argument("tensor name '__metadata__' is reserved");
    if (header.contains(e.name))
      throw std::invalid_argument("duplicate tensor name '" + e.name + "'");
    uint64_t bytes = DtypeSize(e.dtype);
    for (int64_t d : e.shape) {
      if (d < 0) throw std::invalid_argument("tensor '" + e.name + "' has a negative dimension");
      if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes)) {
        throw std::invalid_argument("tensor '" + e.name + "' has a shape too large to store");
      }
    }
    if (bytes != e.data.size()) {
      throw std::invalid_argument("tensor '" + e.name + "' has " + std::to_string(e.data.size()) +
                                  " bytes of data, its shape and dtype need " +
                                  std::to_string(bytes));
    }
    header[e.name] = {{"dtype", DtypeName(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.data.size()}}};
    offset += e.data.size();
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;

  std::string text;
  try {
    text = header.dump();
  } catch (const Json::exception& e) {
    throw std::invalid_argument(std::string("a tensor name or metadata string is not UTF-8: ") +
                                e.what());
  }
  // Pad with spaces so that the data section starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  uint64_t length = text.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &length, 8);
  return out + text;
}

void WriteSafetensors(const std::string& path, std::vector<SafetensorsEntry> entries,
                      const std::map<std::string, std::string>& metadata) {
  std::string header = EncodeSafetensorsHeader(entries, metadata);
  std::vector<std::span<const uint8_t>> pieces;
  pieces.emplace_back(reinterpret_cast<const uint8_t*>(header.data()), header.size());
  for (const auto& e : entries) pieces.push_back(e.data);
  WriteFileAtomically(path, pieces);
}

void WriteFileAtomically(const std::string& path,
                         std::span<const std::span<const uint8_t>> pieces) {
  std::string temp = path + ".tmp-XXXXXX";
  int fd = ::mkstemp(temp.data());
  if (fd < 0) throw SystemError("create a temporary file for", path);
  try {
    // mkstemp creates 0600; adapters and checkpoints are ordinary files.
    if (::fchmod(fd, 0644) != 0) throw SystemError("set permissions of", temp);
    for (auto piece : pieces) WriteAll(fd, piece, temp);
    if (::fsync(fd) != 0) throw SystemError("fsync", temp);
    if (::close(fd) != 0) {
      fd = -1;
      throw SystemError("close", temp);
    }
    fd = -1;
    if (::rename(temp.c_str(), path.c_str()) != 0)
      throw SystemError("rename " + temp + " to", path);
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(temp.c_str());
    throw;
  }
  // Make the rename itself durable.
  std::string dir = ParentDirectory(path);
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) throw SystemError("open directory", dir);
  int rc = ::fsync(dir_fd);
  ::close(dir_fd);
  if (rc != 0) throw SystemError("fsync directory", dir);
}

}  // namespace diablo::model
