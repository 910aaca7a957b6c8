// YAML configuration files read into the same JSON tree the JSON files give,
// so one validator serves both.  YAML needs yaml-cpp at build time; without
// it (an engine-only build on a bare GPU machine) JSON configs still work.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace diablo::train {

// Parses YAML text (a superset of JSON).  Plain scalars become integers,
// numbers, booleans or null when they read as one, strings otherwise; quoted
// scalars stay strings.  Throws std::invalid_argument "<source>:<line>: ..."
// on syntax errors.
nlohmann::json YamlToJson(const std::string& text, const std::string& source);

// One value given on the command line (--set key=value): JSON when it parses
// as JSON (numbers, true/false/null, "quoted", [lists]), a plain string
// otherwise.
nlohmann::json ParseScalar(const std::string& text);

}  // namespace diablo::train
