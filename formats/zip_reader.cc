// Zip parsing: the end record is found by scanning back over at most one
// maximal comment, then the central directory is walked with every field
// checked against the bytes that remain.  Only stored entries can be read.
#include "formats/zip_reader.h"

#include <array>
#include <cerrno>

#include "formats/byte_cursor.h"
#include "formats/gguf.h"  // FormatError
#include "formats/mapped_file.h"

namespace diablo::peft {
namespace {

using model::FormatError;

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kEndSize = 22, kZip64LocatorSize = 20, kZip64EndSize = 56;
constexpr size_t kCentralHeaderSize = 46, kLocalHeaderSize = 30;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint32_t kMax32 = 0xFFFFFFFF;

using model::ByteCursor;

// A cursor over `bytes` (the archive or a prefix of it, so that positions
// stay absolute) whose messages say which archive is not valid.
ByteCursor ZipCursor(std::span<const uint8_t> bytes, const std::string& source) {
  return ByteCursor(bytes, source + ": not a valid zip archive");
}

struct Directory {
  uint64_t entries = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint64_t end = 0;  // where the (zip64) end records begin: the directory must end before
};

// Finds the end-of-central-directory record: the last signature whose comment
// length reaches exactly the end of the archive.
uint64_t FindEndRecord(std::span<const uint8_t> bytes, const std::string& source) {
  ByteCursor c = ZipCursor(bytes, source);
  if (bytes.size() < kEndSize) c.Fail("the file is smaller than a zip end record");
  uint64_t lowest = bytes.size() > kEndSize + 0xFFFF ? bytes.size() - kEndSize - 0xFFFF : 0;
  for (uint64_t pos = bytes.size() - kEndSize + 1; pos-- > lowest;) {
    c.Seek(pos, "end record");
    if (c.Read<uint32_t>("end record signature") != kEndSig) continue;
    c.Skip(16, "end record");
    uint16_t comment = c.Read<uint16_t>("end record comment length");
    if (pos + kEndSize + comment == bytes.size()) return pos;
  }
  c.FailAt(lowest, "no end-of-central-directory record (not a zip file, or truncated)");
}

Directory ReadDirectory(std::span<const uint8_t> bytes, const std::string& source) {
  uint64_t end_pos = FindEndRecord(bytes, source);
  ByteCursor c = ZipCursor(bytes, source);
  c.Seek(end_pos + 4, "end record");
  uint16_t disk = c.Read<uint16_t>("disk number");
  uint16_t cd_disk = c.Read<uint16_t>("directory disk");
  c.Read<uint16_t>("entries on this disk");
  Directory dir;
  dir.entries = c.Read<uint16_t>("entry count");
  dir.size = c.Read<uint32_t>("directory size");
  dir.offset = c.Read<uint32_t>("directory offset");
  dir.end = end_pos;
  if (disk != 0 || cd_disk != 0) c.Fail("multi-disk archives are not supported");

  // A zip64 locator sits right before the end record when the archive needs
  // 64-bit counts or offsets; its values then replace the 32-bit ones.
  if (end_pos >= kZip64LocatorSize) {
    ByteCursor loc = ZipCursor(bytes, source);
    loc.Seek(end_pos - kZip64LocatorSize, "zip64 locator");
    if (loc.Read<uint32_t>("zip64 locator") == kZip64LocatorSig) {
      loc.Read<uint32_t>("zip64 disk");
      uint64_t record = loc.Read<uint64_t>("zip64 end record offset");
      if (record > end_pos - kZip64LocatorSize ||
          end_pos - kZip64LocatorSize - record < kZip64EndSize) {
        loc.Fail("the zip64 end record offset " + std::to_string(record) + " is out of range");
      }
      ByteCursor z = ZipCursor(bytes, source);
      z.Seek(record, "zip64 end record");
      if (z.Read<uint32_t>("zip64 end record") != kZip64EndSig)
        z.Fail("bad zip64 end record signature");
      z.Skip(8 + 2 + 2, "zip64 end record");
      if (z.Read<uint32_t>("zip64 disk") != 0 || z.Read<uint32_t>("zip64 directory disk") != 0) {
        z.Fail("multi-disk archives are not supported");
      }
      z.Read<uint64_t>("zip64 entries on this disk");
      dir.entries = z.Read<uint64_t>("zip64 entry count");
      dir.size = z.Read<uint64_t>("zip64 directory size");
      dir.offset = z.Read<uint64_t>("zip64 directory offset");
      dir.end = record;
    }
  }
  if (dir.offset > dir.end || dir.size > dir.end - dir.offset) {
    c.Fail("the central directory (" + std::to_string(dir.size) + " bytes at " +
           std::to_string(dir.offset) + ") lies outside the archive");
  }
  if (dir.entries > dir.size / kCentralHeaderSize) {
    c.Fail("the central directory claims " + std::to_string(dir.entries) +
           " entries, more than its size allows");
  }
  return dir;
}

// Replaces 0xFFFFFFFF fields by their values from the zip64 extra field.
void ApplyZip64Extra(ByteCursor& extra_cursor, uint64_t extra_end, ZipEntry& e, uint32_t size32,
                     uint32_t compressed32, uint64_t& local_offset) {
  bool need_size = size32 == kMax32, need_compressed = compressed32 == kMax32;
  bool need_offset = local_offset == kMax32;
  while (extra_cursor.pos() + 4 <= extra_end) {
    uint16_t id = extra_cursor.Read<uint16_t>("extra field id");
    uint16_t len = extra_cursor.Read<uint16_t>("extra field length");
    if (len > extra_end - extra_cursor.pos())
      extra_cursor.Fail("entry '" + e.name + "' has a truncated extra field");
    uint64_t field_end = extra_cursor.pos() + len;
    if (id == kZip64ExtraId) {
      auto take = [&](bool needed, uint64_t& out, const char* what) {
        if (!needed) return;
        if (extra_cursor.pos() + 8 > field_end) {
          extra_cursor.Fail("entry '" + e.name + "' zip64 field lacks the " + what);
        }
        out = extra_cursor.Read<uint64_t>(what);
      };
      take(need_size, e.size, "size");
      take(need_compressed, e.compressed, "compressed size");
      take(need_offset, local_offset, "local header offset");
      need_size = need_compressed = need_offset = false;
    }
    extra_cursor.Skip(field_end - extra_cursor.pos(), "extra field");
  }
  if (need_size || need_compressed || need_offset) {
    extra_cursor.Fail("entry '" + e.name + "' needs a zip64 extra field that is missing");
  }
}

}  // namespace

uint32_t Crc32(std::span<const uint8_t> bytes, uint32_t crc) {
  static const std::array<uint32_t, 256> kTable = [] {
    std::array<uint32_t, 256> table{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    return table;
  }();
  crc = ~crc;
  for (uint8_t b : bytes) crc = kTable[(crc ^ b) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

ZipArchive ZipArchive::Parse(std::span<const uint8_t> bytes, const std::string& source) {
  ZipArchive zip;
  zip.source_ = source;
  zip.bytes_ = bytes;
  Directory dir = ReadDirectory(bytes, zip.source_);

  ByteCursor c = ZipCursor(bytes.first(dir.offset + dir.size), zip.source_);
  c.Seek(dir.offset, "central directory");
  // Entries' local headers and data lie before the central directory.
  ByteCursor local = ZipCursor(bytes.first(dir.offset), zip.source_);
  for (uint64_t i = 0; i < dir.entries; ++i) {
    if (c.Read<uint32_t>("central directory header") != kCentralHeaderSig) {
      c.Fail("central directory header " + std::to_string(i) + " has a bad signature");
    }
    ZipEntry e;
    c.Skip(4, "central directory header");
    e.flags = c.Read<uint16_t>("flags");
    e.method = c.Read<uint16_t>("method");
    c.Skip(4, "central directory header");
    e.crc32 = c.Read<uint32_t>("crc32");
    uint32_t compressed32 = c.Read<uint32_t>("compressed size");
    uint32_t size32 = c.Read<uint32_t>("size");
    uint16_t name_len = c.Read<uint16_t>("name length");
    uint16_t extra_len = c.Read<uint16_t>("extra length");
    uint16_t comment_len = c.Read<uint16_t>("comment length");
    c.Skip(2 + 2 + 4, "central directory header");
    uint64_t local_offset = c.Read<uint32_t>("local header offset");
    e.name = c.ReadString(name_len, "entry name");
    e.size = size32;
    e.compressed = compressed32;
    c.Need(extra_len, "extra field");
    uint64_t extra_end = c.pos() + extra_len;
    ApplyZip64Extra(c, extra_end, e, size32, compressed32, local_offset);
    c.Skip(extra_end - c.pos(), "extra field");
    c.Skip(comment_len, "entry comment");

    // The local header repeats the name; its own extra field may differ (torch
    // pads it to align the data), so only its lengths are used.
    local.Seek(local_offset,
               "entry '" + e.name + "' local header, which must precede the central directory");
    if (local.Read<uint32_t>("local header") != kLocalHeaderSig) {
      local.Fail("entry '" + e.name + "' local header has a bad signature");
    }
    local.Skip(kLocalHeaderSize - 8, "local header");
    uint16_t local_name_len = local.Read<uint16_t>("local name length");
    uint16_t local_extra_len = local.Read<uint16_t>("local extra length");
    if (local.ReadString(local_name_len, "local name") != e.name) {
      local.Fail("entry '" + e.name + "' has a different name in its local header");
    }
    local.Skip(local_extra_len, "local extra field");
    e.data_offset = local.pos();
    local.Need(e.compressed, "entry data");  // the data end before the directory starts

    if (!zip.by_name_.emplace(e.name, zip.entries_.size()).second) {
      c.Fail("duplicate entry '" + e.name + "'");
    }
    zip.entries_.push_back(std::move(e));
  }
  return zip;
}

ZipArchive ZipArchive::Open(const std::string& path) {
  model::MappedFile mapped = model::MapReadOnly(path, "zip archive");
  ZipArchive zip = Parse(mapped.bytes, path);
  zip.mapping_ = std::move(mapped.owner);
  return zip;
}

const ZipEntry* ZipArchive::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

std::span<const uint8_t> ZipArchive::Read(const ZipEntry& entry) const {
  auto fail = [&](const std::string& what) -> void {
    throw FormatError(source_ + ": zip entry '" + entry.name + "' " + what);
  };
  if (entry.flags & 1) fail("is encrypted");
  if (entry.method != 0) {
    fail("is compressed (method " + std::to_string(entry.method) +
         "); only stored entries are supported, as torch.save writes them "
         "(was the file re-zipped? save it again with torch.save)");
  }
  if (entry.compressed != entry.size) fail("is stored but its two sizes differ");
  std::span<const uint8_t> data = bytes_.subspan(entry.data_offset, entry.size);
  if (Crc32(data) != entry.crc32) fail("fails its CRC-32 check (corrupt file)");
  return data;
}

}  // namespace diablo::peft
