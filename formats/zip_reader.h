// A minimal reader of zip archives whose entries are stored uncompressed, as
// torch.save writes them.  Plain C++ (no LibTorch) so the fuzz targets can
// build it alone; every offset and size is checked against the archive first.
//
// Layout (all little-endian; "zip64" fields replace 0xFFFF / 0xFFFFFFFF):
//   per entry:  local header  u32 0x04034b50 | u16 version | u16 flags |
//                             u16 method | u16 time | u16 date | u32 crc32 |
//                             u32 compressed | u32 size | u16 name_len |
//                             u16 extra_len | name | extra | data
//   central directory, one header per entry:
//               u32 0x02014b50 | u16 made_by | u16 version | u16 flags |
//               u16 method | u16 time | u16 date | u32 crc32 | u32 compressed |
//               u32 size | u16 name_len | u16 extra_len | u16 comment_len |
//               u16 disk | u16 internal_attr | u32 external_attr |
//               u32 local_header_offset | name | extra | comment
//   [zip64 end record u32 0x06064b50 ... and its locator u32 0x07064b50]
//   end record: u32 0x06054b50 | u16 disk | u16 cd_disk | u16 entries_here |
//               u16 entries | u32 cd_size | u32 cd_offset | u16 comment_len |
//               comment
// The central directory is authoritative for sizes; the local header is read
// only to find where the data start.  Zip64 extra field (id 0x0001): u64 size,
// u64 compressed, u64 local_header_offset, each present only when the 32-bit
// field holds 0xFFFFFFFF.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace diablo::peft {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 = stored; anything else is refused on read
  uint16_t flags = 0;   // bit 0: encrypted (refused on read)
  uint32_t crc32 = 0;
  uint64_t size = 0;  // uncompressed
  uint64_t compressed = 0;
  uint64_t data_offset = 0;  // where the entry's bytes start in the archive
};

// A parsed archive.  Entries' data point into the bytes given to Parse, or
// into the mapping made by Open, which this object keeps alive.
class ZipArchive {
 public:
  // Maps the file read-only and parses it.  Throws model::FormatError.
  static ZipArchive Open(const std::string& path);
  // Parses bytes already in memory; `source` names them in error messages.
  static ZipArchive Parse(std::span<const uint8_t> bytes, const std::string& source);

  const std::string& source() const { return source_; }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* Find(std::string_view name) const;
  // The bytes of a stored entry after checking its CRC-32.  Throws
  // model::FormatError for compressed or encrypted entries and bad checksums.
  std::span<const uint8_t> Read(const ZipEntry& entry) const;

 private:
  std::string source_;
  std::shared_ptr<const void> mapping_;
  std::span<const uint8_t> bytes_;
  std::vector<ZipEntry> entries_;
  std::map<std::string, size_t, std::less<>> by_name_;
};

// CRC-32 (IEEE 802.3, as in zip and gzip) of `bytes`, continuing from `crc`.
uint32_t Crc32(std::span<const uint8_t> bytes, uint32_t crc = 0);

}  // namespace diablo::peft
