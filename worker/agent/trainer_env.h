// What a trainer may see of the agent's environment: the variables a
// training process needs (paths, locale, thread, allocator and device
// settings) and nothing else.  The agent holds the worker token and the
// storage keys and does all storage I/O itself, so a job's code never
// receives them.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>

namespace diablo::agent {

// Whether the agent passes variable `name` on to a trainer.
bool PassesToTrainer(std::string_view name);

// Whether `name` says it holds a secret (TOKEN, SECRET, PASSWORD,
// CREDENTIAL, KEY or AUTH in it, any case): never passed on, and its value
// is redacted from what the trainer writes.
bool NamesASecret(std::string_view name);

// Calls `visit(name, value)` for each "NAME=value" entry of an environ-style
// array (null-terminated; entries without '=' are skipped).
void ForEachVariable(char** env,
                     const std::function<void(std::string_view, std::string_view)>& visit);

// The trainer's whole environment: the passing variables of `agent_env`
// (environ-style "NAME=value" entries, null-terminated), then `extra` (the
// torchrun variables), which wins over anything inherited.
std::map<std::string, std::string> TrainerEnvironment(
    char** agent_env, const std::map<std::string, std::string>& extra);

}  // namespace diablo::agent
