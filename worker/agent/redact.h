// Text a trainer writes (stderr, error messages, events) goes to the job's
// owner; before it leaves the node the agent removes what is not theirs to
// see: the values of the agent's secrets and the worker's own paths.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace diablo::agent {

class Redactor {
 public:
  // `secrets`: values replaced by "<redacted>" wherever they appear (values
  // shorter than 8 characters are ignored: they would mangle ordinary text).
  // `paths`: prefixes replaced by their names in angle brackets, e.g.
  // {"/var/lib/diablo-worker/jobs/j-1", "job"} turns ".../jobs/j-1/x" into
  // "<job>/x"; longer paths are tried first.
  Redactor(std::vector<std::string> secrets, std::map<std::string, std::string> paths);

  // The agent's secret-holding variables (names that say TOKEN, SECRET,
  // PASSWORD, CREDENTIAL, KEY or AUTH) among `agent_env`, plus `more`.
  static std::vector<std::string> SecretsOf(char** agent_env, std::vector<std::string> more);

  std::string Apply(std::string text) const;

 private:
  std::vector<std::string> secrets_;
  std::vector<std::pair<std::string, std::string>> paths_;  // longest first
};

}  // namespace diablo::agent
