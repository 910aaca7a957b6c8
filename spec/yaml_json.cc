// YAML → JSON through yaml-cpp when the build has it.
#include "spec/yaml_json.h"

#include <cmath>
#include <stdexcept>

#ifdef DIABLO_WITH_YAML
#include <yaml-cpp/yaml.h>
#endif

namespace diablo::train {
namespace {

using nlohmann::json;

#ifdef DIABLO_WITH_YAML
json PlainScalar(const std::string& text) {
  // YAML 1.2 core schema spellings; everything else is a string.
  if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL")
    return nullptr;
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  try {
    size_t used = 0;
    long long i = std::stoll(text, &used, 10);
    if (used == text.size()) return i;
  } catch (const std::exception&) {
  }
  try {
    size_t used = 0;
    double d = std::stod(text, &used);
    if (used == text.size() && std::isfinite(d)) return d;
  } catch (const std::exception&) {
  }
  return text;
}

json Convert(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      // Tag "!" marks a quoted scalar: the user said "string".
      return node.Tag() == "!" ? json(node.Scalar()) : PlainScalar(node.Scalar());
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const auto& item : node) out.push_back(Convert(item));
      return out;
    }
    case YAML::NodeType::Map: {
      json out = json::object();
      for (const auto& item : node) out[item.first.as<std::string>()] = Convert(item.second);
      return out;
    }
  }
  return nullptr;
}
#endif

}  // namespace

json YamlToJson(const std::string& text, const std::string& source) {
#ifdef DIABLO_WITH_YAML
  try {
    return Convert(YAML::Load(text));
  } catch (const YAML::Exception& e) {
    throw std::invalid_argument(source + ":" + std::to_string(e.mark.line + 1) +
                                ": not valid YAML: " + e.msg);
  }
#else
  try {
    return json::parse(text);
  } catch (const json::parse_error&) {
    throw std::invalid_argument(source +
                                ": this build of diablo reads JSON configs only (it was built "
                                "without yaml-cpp); convert the file to JSON");
  }
#endif
}

json ParseScalar(const std::string& text) {
  json value = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) return text;
  return value;
}

}  // namespace diablo::train
