#include "worker/agent/redact.h"

#include <algorithm>
#include <string_view>

#include "worker/agent/trainer_env.h"

namespace diablo::agent {
namespace {

constexpr size_t kShortestSecret = 8;

void ReplaceAll(std::string& text, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
}

}  // namespace

Redactor::Redactor(std::vector<std::string> secrets, std::map<std::string, std::string> paths) {
  for (std::string& secret : secrets)
    if (secret.size() >= kShortestSecret) secrets_.push_back(std::move(secret));
  for (auto& [path, name] : paths) {
    std::string prefix = path;
    while (prefix.size() > 1 && prefix.back() == '/') prefix.pop_back();
    if (prefix.size() > 1) paths_.emplace_back(std::move(prefix), "<" + name + ">");
  }
  std::sort(paths_.begin(), paths_.end(),
            [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
}

std::vector<std::string> Redactor::SecretsOf(char** agent_env, std::vector<std::string> more) {
  ForEachVariable(agent_env, [&](std::string_view name, std::string_view value) {
    if (NamesASecret(name)) more.emplace_back(value);
  });
  return more;
}

std::string Redactor::Apply(std::string text) const {
  for (const std::string& secret : secrets_) ReplaceAll(text, secret, "<redacted>");
  for (const auto& [prefix, name] : paths_) ReplaceAll(text, prefix, name);
  return text;
}

}  // namespace diablo::agent
