// Builds torch.save-shaped bytes by hand for tests and fuzz seeds: pickles
// opcode by opcode (including hostile ones Python would happily run) and zip
// archives of stored entries.  Layouts as documented in
// formats/torch_save_reader.h and formats/zip_reader.h.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "formats/zip_reader.h"

namespace diablo::testing {

template <typename T>
void AppendRaw(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

class PickleBuilder {
 public:
  PickleBuilder() { bytes_ = std::string("\x80\x02", 2); }  // PROTO 2

  PickleBuilder& Op(char op) {
    bytes_ += op;
    return *this;
  }
  PickleBuilder& Raw(const std::string& raw) {
    bytes_ += raw;
    return *this;
  }
  PickleBuilder& Mark() { return Op('('); }
  PickleBuilder& Str(const std::string& s) {
    Op('X');
    AppendRaw<uint32_t>(bytes_, static_cast<uint32_t>(s.size()));
    bytes_ += s;
    return *this;
  }
  PickleBuilder& Int(int32_t v) {
    Op('J');
    AppendRaw<int32_t>(bytes_, v);
    return *this;
  }
  PickleBuilder& Global(const std::string& module, const std::string& name) {
    return Op('c').Raw(module + "\n" + name + "\n");
  }
  PickleBuilder& IntTuple(const std::vector<int32_t>& values) {
    Mark();
    for (int32_t v : values) Int(v);
    return Op('t');
  }
  // _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()).
  PickleBuilder& Tensor(const std::string& storage_class, const std::string& key, int32_t numel,
                        int32_t offset, const std::vector<int32_t>& sizes,
                        const std::vector<int32_t>& strides) {
    Global("torch._utils", "_rebuild_tensor_v2").Mark();
    Mark()
        .Str("storage")
        .Global("torch", storage_class)
        .Str(key)
        .Str("cpu")
        .Int(numel)
        .Op('t')
        .Op('Q');
    Int(offset).IntTuple(sizes).IntTuple(strides).Op('\x89');
    Global("collections", "OrderedDict").Op(')').Op('R');
    return Op('t').Op('R');
  }
  // STOP; returns the bytes.
  std::string Stop() { return bytes_ + "."; }

 private:
  std::string bytes_;
};

struct ZipFile {
  std::string name;
  std::string data;
  uint16_t method = 0;  // the method recorded; the data are written as given
};

// A zip archive of `files` stored one after the other, then the central
// directory and the end record.
inline std::string StoredZip(const std::vector<ZipFile>& files) {
  std::string zip, directory;
  for (const ZipFile& f : files) {
    uint32_t crc =
        diablo::peft::Crc32({reinterpret_cast<const uint8_t*>(f.data.data()), f.data.size()});
    uint32_t offset = static_cast<uint32_t>(zip.size());
    auto common = [&](std::string& out) {
      AppendRaw<uint16_t>(out, 0);  // flags
      AppendRaw<uint16_t>(out, f.method);
      AppendRaw<uint32_t>(out, 0);  // time, date
      AppendRaw<uint32_t>(out, crc);
      AppendRaw<uint32_t>(out, static_cast<uint32_t>(f.data.size()));
      AppendRaw<uint32_t>(out, static_cast<uint32_t>(f.data.size()));
      AppendRaw<uint16_t>(out, static_cast<uint16_t>(f.name.size()));
      AppendRaw<uint16_t>(out, 0);  // extra length
    };
    AppendRaw<uint32_t>(zip, 0x04034b50);
    AppendRaw<uint16_t>(zip, 20);
    common(zip);
    zip += f.name + f.data;

    AppendRaw<uint32_t>(directory, 0x02014b50);
    AppendRaw<uint16_t>(directory, 20);
    AppendRaw<uint16_t>(directory, 20);
    common(directory);
    AppendRaw<uint16_t>(directory, 0);  // comment length
    AppendRaw<uint16_t>(directory, 0);  // disk
    AppendRaw<uint16_t>(directory, 0);  // internal attributes
    AppendRaw<uint32_t>(directory, 0);  // external attributes
    AppendRaw<uint32_t>(directory, offset);
    directory += f.name;
  }
  uint32_t directory_offset = static_cast<uint32_t>(zip.size());
  zip += directory;
  AppendRaw<uint32_t>(zip, 0x06054b50);
  AppendRaw<uint32_t>(zip, 0);  // disks
  AppendRaw<uint16_t>(zip, static_cast<uint16_t>(files.size()));
  AppendRaw<uint16_t>(zip, static_cast<uint16_t>(files.size()));
  AppendRaw<uint32_t>(zip, static_cast<uint32_t>(directory.size()));
  AppendRaw<uint32_t>(zip, directory_offset);
  AppendRaw<uint16_t>(zip, 0);  // comment length
  return zip;
}

inline std::string FloatBytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

}  // namespace diablo::testing
