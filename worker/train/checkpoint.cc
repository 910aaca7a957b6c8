#include "worker/train/checkpoint.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "formats/safetensors.h"
#include "worker/peft/adapter_files.h"
#include "worker/peft/tensor_io.h"

namespace diablo::train {
namespace fs = std::filesystem;
namespace {

constexpr char kLatest[] = "latest";
constexpr char kStateFile[] = "trainer_state.json";
constexpr char kOptimizerFile[] = "optimizer.pt";
constexpr char kFullWeightsFile[] = "model.safetensors";

void FsyncPath(const fs::path& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) throw std::runtime_error("cannot open " + path.string() + " to sync it");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw std::runtime_error("fsync failed for " + path.string());
}

void WriteText(const fs::path& path, const std::string& text) {
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  model::WriteFileAtomically(path.string(), std::span(&bytes, 1));
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument(path.string() + ": missing from the checkpoint");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

nlohmann::json TrainerState::to_json() const {
  return {{"step", step},
          {"epoch", epoch},
          {"loss_scale", loss_scale},
          {"good_steps", good_steps},
          {"world_size", world_size}};
}

TrainerState TrainerState::FromJson(const nlohmann::json& j, const std::string& source) {
  try {
    TrainerState s;
    s.step = j.at("step").get<int64_t>();
    s.epoch = j.at("epoch").get<int64_t>();
    s.loss_scale = j.at("loss_scale").get<double>();
    s.good_steps = j.at("good_steps").get<int64_t>();
    s.world_size = j.at("world_size").get<int>();
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(source + ": not a trainer state: " + e.what());
  }
}

std::string CheckpointsDir(const std::string& output_dir) {
  return (fs::path(output_dir) / "checkpoints").string();
}

std::string CheckpointName(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  return name;
}

std::vector<std::pair<std::string, at::Tensor>> TrainedParameters(torch::nn::Module& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true))
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  return out;
}

void SaveTrainedWeights(torch::nn::Module& model, const std::string& path) {
  std::map<std::string, at::Tensor> weights;
  for (auto& [key, value] : TrainedParameters(model)) weights[key] = value.detach();
  peft::SaveSafetensors(path, weights, {{"format", "pt"}});
}

namespace {

// Throws std::domain_error naming the first trained weight that holds a NaN
// or an infinity.  One device sync when all is well.
void CheckTrainedWeightsFinite(torch::nn::Module& model, int64_t step) {
  const auto trained = TrainedParameters(model);
  std::vector<at::Tensor> finite;
  finite.reserve(trained.size());
  for (const auto& [name, weight] : trained) finite.push_back(at::isfinite(weight.detach()).all());
  if (finite.empty() || at::stack(finite).all().item<bool>()) return;
  std::string first;
  for (size_t i = 0; i < trained.size() && first.empty(); ++i)
    if (!finite[i].item<bool>()) first = trained[i].first;
  throw std::domain_error("a trained weight (" + first + ") is not finite at step " +
                          std::to_string(step) + "; its checkpoint is not written");
}

}  // namespace

std::string SaveCheckpoint(const std::string& output_dir, const TrainConfig& config,
                           torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                           const TrainerState& state, int64_t keep) {
  CheckTrainedWeightsFinite(model, state.step);
  const fs::path root = CheckpointsDir(output_dir);
  const std::string name = CheckpointName(state.step);
  const fs::path final_dir = root / name;
  const fs::path temp = root / (name + ".tmp");
  fs::create_directories(root);
  fs::remove_all(temp);
  fs::create_directories(temp);

  if (config.method.name == TrainMethod::kFull) {
    SaveTrainedWeights(model, (temp / kFullWeightsFile).string());
  } else {
    peft::SaveAdapter(model, ToAdapterConfig(config), temp.string());
  }
  torch::save(optimizer, (temp / kOptimizerFile).string());
  WriteText(temp / kStateFile, state.to_json().dump(2) + "\n");
  FsyncPath(temp / kOptimizerFile, false);
  FsyncPath(temp, true);

  fs::remove_all(final_dir);  // a checkpoint of the same step from an interrupted run
  fs::rename(temp, final_dir);
  FsyncPath(root, true);
  WriteText(root / kLatest, name + "\n");

  // Keep the newest `keep` step-* directories.
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root)) {
    std::string n = entry.path().filename().string();
    if (entry.is_directory() && n.rfind("step-", 0) == 0 && n.find(".tmp") == std::string::npos)
      names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  for (size_t i = 0; i + static_cast<size_t>(keep) < names.size(); ++i)
    if (names[i] != name) fs::remove_all(root / names[i]);
  return final_dir.string();
}

std::string LatestCheckpoint(const std::string& output_dir) {
  const fs::path root = CheckpointsDir(output_dir);
  std::error_code ec;
  if (!fs::exists(root / kLatest, ec)) return "";
  std::string name = ReadText(root / kLatest);
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r')) name.pop_back();
  if (name.rfind("step-", 0) != 0 || name.find('/') != std::string::npos)
    throw std::invalid_argument((root / kLatest).string() + ": does not name a checkpoint");
  if (!fs::is_directory(root / name))
    throw std::invalid_argument((root / kLatest).string() + " names " + name +
                                ", which is missing");
  return (root / name).string();
}

TrainerState LoadCheckpoint(const std::string& path, const TrainConfig& config,
                            torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                            at::Device device) {
  const fs::path dir(path);
  TrainerState state =
      TrainerState::FromJson(nlohmann::json::parse(ReadText(dir / kStateFile), nullptr, false),
                             (dir / kStateFile).string());
  if (config.method.name == TrainMethod::kFull) {
    std::map<std::string, at::Tensor> weights =
        peft::LoadSafetensors((dir / kFullWeightsFile).string());
    at::NoGradGuard no_grad;
    for (auto& [key, value] : TrainedParameters(model)) {
      auto it = weights.find(key);
      if (it == weights.end() || !it->second.sizes().equals(value.sizes()))
        throw std::invalid_argument(path + ": no weight " + key + " of shape " +
                                    c10::str(value.sizes()) + " (a checkpoint of another model?)");
      value.copy_(it->second);
    }
  } else {
    peft::AdapterConfig saved = peft::ReadAdapterConfig(dir.string());
    peft::AdapterConfig wanted = ToAdapterConfig(config);
    if (saved.method != wanted.method || saved.blocks != wanted.blocks ||
        saved.rank != wanted.rank || saved.target_modules != wanted.target_modules)
      throw std::invalid_argument(
          path + ": the checkpoint's adapter (" + FineTuneMethodName(saved.method) +
          ") differs from the config's method settings; resume with the config "
          "that started the run");
    peft::LoadAdapterWeights(model, dir.string());
  }
  torch::load(optimizer, (dir / kOptimizerFile).string(), device);
  return state;
}

}  // namespace diablo::train
