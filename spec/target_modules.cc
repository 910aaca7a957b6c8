#include "spec/target_modules.h"

#include <stdexcept>

namespace diablo {

std::vector<TargetModule> CompileTargetModules(const std::vector<std::string>& specs) {
  std::vector<TargetModule> targets;
  for (const std::string& spec : specs) {
    TargetModule t;
    t.spec = spec;
    if (spec.rfind("re:", 0) == 0) {
      t.is_pattern = true;
      try {
        t.pattern = std::regex(spec.substr(3), std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        throw std::invalid_argument("target '" + spec +
                                    "' is not a valid regular expression: " + e.what());
      }
    }
    targets.push_back(std::move(t));
  }
  return targets;
}

std::string LastPathComponent(const std::string& path) {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

bool MatchesTarget(const TargetModule& target, const std::string& path) {
  return target.is_pattern ? std::regex_match(path, target.pattern)
                           : LastPathComponent(path) == target.spec;
}

}  // namespace diablo
