// Which modules an adapter targets: a plain name matches a module whose last
// path component equals it ("q_proj"); "re:<regex>" is matched against the
// whole dotted path.  Plain C++, shared by injection (worker/peft) and the
// estimator (spec/estimate.h) so both pick exactly the same modules.
#pragma once

#include <regex>
#include <string>
#include <vector>

namespace diablo {

struct TargetModule {
  std::string spec;  // as written in the config
  bool is_pattern = false;
  std::regex pattern;
  int matches = 0;  // callers count hits to report targets that matched nothing
};

// Throws std::invalid_argument "target '<spec>' is not a valid regular
// expression: ..." for a bad pattern.
std::vector<TargetModule> CompileTargetModules(const std::vector<std::string>& specs);

// The last component of a dotted module path ("model.layers.0.q_proj" -> "q_proj").
std::string LastPathComponent(const std::string& path);

bool MatchesTarget(const TargetModule& target, const std::string& path);

}  // namespace diablo
