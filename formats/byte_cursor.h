// ByteCursor: the one bounds-checked reader of untrusted bytes that the GGUF,
// zip and pickle parsers share.  Every size, count and offset taken from the
// input is checked against the bytes left, without overflow, before it is
// used; a failed check throws FormatError saying what was read, where, and
// how many bytes it needed against how many were left.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "formats/gguf.h"  // FormatError

namespace diablo::model {

class ByteCursor {
 public:
  // `context` starts every error message, e.g. "x.gguf: not a valid GGUF file".
  // REQUIRES: `bytes` outlive the cursor and every span ReadBytes returns.
  ByteCursor(std::span<const uint8_t> bytes, std::string context)
      : bytes_(bytes), context_(std::move(context)) {}

  // Guarantees: 0 <= pos() <= size() at all times, so remaining() never
  // wraps; a read, skip or seek that throws leaves pos() where it was.
  uint64_t pos() const { return pos_; }
  uint64_t size() const { return bytes_.size(); }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  // Whether `count` elements of `element_size` bytes each fit in the bytes
  // left; count * element_size is never formed, so it cannot overflow.  A
  // zero element_size never fits: nothing would bound the count.
  bool Holds(uint64_t count, uint64_t element_size) const {
    return element_size != 0 && count <= remaining() / element_size;
  }

  // Throws unless at least `n` bytes are left (any n, up to UINT64_MAX).
  void Need(uint64_t n, std::string_view what) const {
    if (n > remaining()) {
      Fail("truncated while reading " + std::string(what) + ": needs " + std::to_string(n) +
           " bytes, " + std::to_string(remaining()) + " left");
    }
  }

  // A little-endian integer or IEEE float (whatever the host's byte order).
  template <typename T>
  T Read(std::string_view what) {
    static_assert(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>,
                  "Read takes an integer or floating-point type");
    static_assert(std::endian::native == std::endian::little ||
                  std::endian::native == std::endian::big);
    Need(sizeof(T), what);
    uint8_t raw[sizeof(T)];
    std::memcpy(raw, bytes_.data() + pos_, sizeof(T));
    if constexpr (std::endian::native == std::endian::big) std::reverse(raw, raw + sizeof(T));
    T value;
    std::memcpy(&value, raw, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  // The next `n` bytes, not copied.  Throws unless n bytes are left.
  std::span<const uint8_t> ReadBytes(uint64_t n, std::string_view what) {
    Need(n, what);
    std::span<const uint8_t> run = bytes_.subspan(pos_, n);
    pos_ += n;
    return run;
  }

  // The next `n` bytes as a string.  Throws unless n bytes are left.
  std::string ReadString(uint64_t n, std::string_view what) {
    std::span<const uint8_t> run = ReadBytes(n, what);
    return std::string(reinterpret_cast<const char*>(run.data()), run.size());
  }

  // A string stored as a little-endian length of type `Length` followed by
  // that many bytes.  Throws, naming the prefix's offset, when the prefix
  // claims more bytes than are left after it; nothing is allocated before.
  template <typename Length>
  std::string ReadPrefixedString(std::string_view what) {
    static_assert(std::is_unsigned_v<Length>, "a length prefix is unsigned");
    uint64_t start = pos_;
    uint64_t length = Read<Length>(what);
    if (length > remaining()) {
      std::string left = std::to_string(remaining());
      pos_ = start;
      FailAt(start, "truncated while reading " + std::string(what) + ": its length prefix says " +
                        std::to_string(length) + " bytes, " + left + " left after it");
    }
    return ReadString(length, what);
  }

  // The bytes up to the next `delimiter`, which is consumed but not returned.
  // Throws when no delimiter is left.
  std::string ReadUntil(uint8_t delimiter, std::string_view what) {
    const uint8_t* start = bytes_.data() + pos_;
    // memchr must not see a null pointer, even for zero bytes.
    const void* found = remaining() == 0 ? nullptr : std::memchr(start, delimiter, remaining());
    if (found == nullptr) {
      const char* hex = "0123456789abcdef";
      Fail("truncated while reading " + std::string(what) + ": no terminating byte 0x" +
           hex[delimiter >> 4] + hex[delimiter & 15] + " in the " + std::to_string(remaining()) +
           " bytes left");
    }
    uint64_t n = static_cast<const uint8_t*>(found) - start;
    std::string s = ReadString(n, what);
    pos_ += 1;
    return s;
  }

  // Moves forward `n` bytes.  Throws unless n bytes are left.
  void Skip(uint64_t n, std::string_view what) {
    Need(n, what);
    pos_ += n;
  }

  // Moves to absolute `offset`.  Throws when offset > size() (offset ==
  // size() is allowed: it is the end, where only zero-byte reads succeed).
  void Seek(uint64_t offset, std::string_view what) {
    if (offset > size()) {
      Fail("cannot seek to byte " + std::to_string(offset) + " for " + std::string(what) +
           ": only " + std::to_string(size()) + " bytes");
    }
    pos_ = offset;
  }

  // Throws FormatError "<context>: <what> (at byte <offset> of <size>)".
  [[noreturn]] void Fail(std::string_view what) const { FailAt(pos_, what); }
  [[noreturn]] void FailAt(uint64_t offset, std::string_view what) const {
    throw FormatError(context_ + ": " + std::string(what) + " (at byte " + std::to_string(offset) +
                      " of " + std::to_string(size()) + ")");
  }

 private:
  std::span<const uint8_t> bytes_;
  std::string context_;
  uint64_t pos_ = 0;  // invariant: pos_ <= bytes_.size()
};

}  // namespace diablo::model
