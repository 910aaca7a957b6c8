// SHA-256 digests (OpenSSL) as lower-case hex: the checksum of uploads,
// artifacts and downloads everywhere in the service.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace diablo {

// Incremental digest for streamed content.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view data);
  // The hex digest; the object must not be updated afterwards.
  std::string HexDigest();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

std::string Sha256Hex(std::string_view data);
absl::StatusOr<std::string> Sha256OfFile(const std::filesystem::path& path);

}  // namespace diablo
