#include "worker/train/checkpoint_share.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <vector>

#include "worker/train/checkpoint.h"

namespace diablo::train {
namespace fs = std::filesystem;
namespace {

// Broadcast in pieces of this size: a full fine-tune's checkpoint holds the
// whole model, which need not fit in one device buffer twice.
constexpr int64_t kChunkBytes = int64_t{64} << 20;

at::TensorOptions Bytes(at::Device device) { return at::TensorOptions(device).dtype(at::kByte); }

// Rank 0's `text` on every rank: its length first, then its bytes.
std::string BroadcastText(Collective& c, const std::string& text, at::Device device) {
  at::Tensor size =
      at::full({1}, static_cast<int64_t>(text.size()), at::TensorOptions(device).dtype(at::kLong));
  c.Broadcast(size, 0);
  const int64_t n = size.item<int64_t>();
  at::Tensor bytes = at::empty({n}, Bytes(at::kCPU));
  if (c.rank() == 0 && n > 0) std::memcpy(bytes.data_ptr<uint8_t>(), text.data(), text.size());
  bytes = bytes.to(device);
  c.Broadcast(bytes, 0);
  bytes = bytes.cpu();
  return {reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), static_cast<size_t>(n)};
}

// {"name": "step-00000010", "files": {"optimizer.pt": 1234, ...}}
nlohmann::json Describe(fs::path dir) {
  if (!dir.has_filename()) dir = dir.parent_path();  // "--resume-from step-00000010/"
  nlohmann::json files = nlohmann::json::object();
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file()) files[entry.path().filename().string()] = entry.file_size();
  return {{"name", dir.filename().string()}, {"files", files}};
}

bool HaveSame(const fs::path& dir, const nlohmann::json& wanted) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && Describe(dir)["files"] == wanted["files"];
}

// Rank 0 sends `file`; every other rank receives it and, when `out` is open,
// writes it there.
void TransferFile(Collective& c, const fs::path& source, int64_t size, std::ofstream* out,
                  at::Device device) {
  std::ifstream in;
  if (c.rank() == 0) {
    in.open(source, std::ios::binary);
    if (!in) throw std::runtime_error(source.string() + ": cannot read it to send to the ranks");
  }
  for (int64_t offset = 0; offset < size; offset += kChunkBytes) {
    const int64_t n = std::min(kChunkBytes, size - offset);
    at::Tensor chunk = at::empty({n}, Bytes(at::kCPU));
    if (c.rank() == 0 && !in.read(reinterpret_cast<char*>(chunk.data_ptr<uint8_t>()), n))
      throw std::runtime_error(source.string() + ": shorter than it was a moment ago");
    chunk = chunk.to(device);
    c.Broadcast(chunk, 0);
    if (out != nullptr && out->is_open()) {
      chunk = chunk.cpu();
      out->write(reinterpret_cast<const char*>(chunk.data_ptr<uint8_t>()), n);
    }
  }
}

}  // namespace

std::string ShareCheckpoint(Collective& c, const std::string& rank0_path,
                            const std::string& rank0_error, const std::string& output_dir,
                            at::Device device) {
  nlohmann::json plan;
  if (c.rank() == 0)
    plan = rank0_error.empty() ? Describe(rank0_path) : nlohmann::json{{"error", rank0_error}};
  plan = nlohmann::json::parse(BroadcastText(c, plan.dump(), device));
  if (plan.contains("error")) throw std::invalid_argument(plan["error"].get<std::string>());

  const std::string name = plan["name"].get<std::string>();
  // The name becomes a folder under every rank's checkpoints/.
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos)
    throw std::runtime_error("rank 0 named checkpoint \"" + name +
                             "\", which is not a folder name");
  const fs::path local =
      c.rank() == 0 ? fs::path(rank0_path) : fs::path(CheckpointsDir(output_dir)) / name;
  const bool missing = c.rank() != 0 && !HaveSame(local, plan);
  at::Tensor missing_count =
      at::full({1}, missing ? 1.0 : 0.0, at::TensorOptions(device).dtype(at::kFloat));
  c.AllReduceSum({missing_count});
  if (missing_count.item<double>() == 0) return local.string();

  // Ranks that have it take part in each broadcast and drop the bytes.  A
  // receiving rank writes beside the final place and renames, so a crash
  // leaves no half checkpoint, and two ranks of one node that both lacked it
  // do not write into each other's files.
  const fs::path staging = local.string() + ".recv-" + std::to_string(c.rank());
  if (missing) {
    fs::remove_all(staging);
    fs::create_directories(staging);
  }
  for (const auto& [file, size] : plan["files"].items()) {
    if (file.find('/') != std::string::npos || file == "." || file == "..")
      throw std::runtime_error("rank 0 sent a checkpoint file named \"" + file + "\"");
    std::ofstream out;
    if (missing) {
      out.open(staging / file, std::ios::binary | std::ios::trunc);
      if (!out) throw std::runtime_error((staging / file).string() + ": cannot write it");
    }
    TransferFile(c, fs::path(rank0_path) / file, size.get<int64_t>(), &out, device);
    if (missing && !out.flush())
      throw std::runtime_error((staging / file).string() + ": writing it failed");
  }
  if (missing && !HaveSame(local, plan)) {  // another rank of this node may have been faster
    std::error_code ec;
    // A different checkpoint of the same step (an earlier run's) moves aside
    // rather than being deleted under a rank that may be reading it.
    const fs::path stale = local.string() + ".stale-" + std::to_string(c.rank());
    if (fs::exists(local, ec)) fs::rename(local, stale, ec);
    fs::rename(staging, local, ec);
    if (ec && !HaveSame(local, plan))
      throw std::runtime_error("cannot put the received checkpoint at " + local.string() + ": " +
                               ec.message());
    fs::remove_all(stale, ec);
  }
  if (missing) {
    std::error_code ec;
    fs::remove_all(staging, ec);
  }
  return local.string();
}

}  // namespace diablo::train
