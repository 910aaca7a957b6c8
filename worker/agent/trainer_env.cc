#include "worker/agent/trainer_env.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>

namespace diablo::agent {
namespace {

constexpr std::array<std::string_view, 9> kNames = {
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "LANGUAGE"};

// Thread pools, allocators, devices, collectives and sanitizers read these.
constexpr std::array<std::string_view, 16> kPrefixes = {
    "LC_",   "OMP_",    "MKL_",  "OPENBLAS_", "KMP_",     "GOMP_", "MALLOC_", "CUDA_",
    "NCCL_", "NVIDIA_", "GLOO_", "TORCH_",    "PYTORCH_", "ASAN_", "UBSAN_",  "LSAN_"};

// Even under an allowed prefix, a name that says it holds a secret stays out.
constexpr std::array<std::string_view, 6> kSecretWords = {"TOKEN",      "SECRET", "PASSWORD",
                                                          "CREDENTIAL", "KEY",    "AUTH"};

}  // namespace

bool NamesASecret(std::string_view name) {
  std::string upper(name);
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return std::any_of(kSecretWords.begin(), kSecretWords.end(),
                     [&](std::string_view word) { return upper.find(word) != std::string::npos; });
}

bool PassesToTrainer(std::string_view name) {
  if (NamesASecret(name)) return false;
  if (std::find(kNames.begin(), kNames.end(), name) != kNames.end()) return true;
  return std::any_of(kPrefixes.begin(), kPrefixes.end(),
                     [&](std::string_view prefix) { return name.starts_with(prefix); });
}

void ForEachVariable(char** env,
                     const std::function<void(std::string_view, std::string_view)>& visit) {
  for (char** e = env; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const size_t eq = entry.find('=');
    if (eq != std::string_view::npos) visit(entry.substr(0, eq), entry.substr(eq + 1));
  }
}

std::map<std::string, std::string> TrainerEnvironment(
    char** agent_env, const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> env;
  ForEachVariable(agent_env, [&](std::string_view name, std::string_view value) {
    if (PassesToTrainer(name)) env[std::string(name)] = std::string(value);
  });
  for (const auto& [name, value] : extra) env[name] = value;
  return env;
}

}  // namespace diablo::agent
