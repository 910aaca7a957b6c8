// One schema for jobs, held three times: the proto `JobSpec` (what the API
// takes), the configuration parser (what `diablo train` and the scheduler's
// validation read) and the reference table in docs/training.md.  These
// tests fail when a field is added to one and not the others, or when the
// documented default is not the parser's.
#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "diablo/v1/spec.pb.h"
#include "spec/train_config.h"

namespace diablo {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using nlohmann::json;

// Dotted paths of every leaf field of `message` ("optim.lr").
void ProtoLeaves(const Descriptor& message, const std::string& prefix, std::set<std::string>& out) {
  for (int i = 0; i < message.field_count(); ++i) {
    const FieldDescriptor& f = *message.field(i);
    if (f.type() == FieldDescriptor::TYPE_MESSAGE && !f.is_repeated())
      ProtoLeaves(*f.message_type(), prefix + f.name() + ".", out);
    else
      out.insert(prefix + f.name());
  }
}

// Dotted paths and values of every leaf of a configuration document.
void JsonLeaves(const json& doc, const std::string& prefix, std::map<std::string, json>& out) {
  for (const auto& [key, value] : doc.items()) {
    if (value.is_object())
      JsonLeaves(value, prefix + key + ".", out);
    else
      out[prefix + key] = value;
  }
}

std::map<std::string, json> ParserDefaults() {
  std::map<std::string, json> out;
  JsonLeaves(train::ConfigToJson(train::TrainConfig{}), "", out);
  return out;
}

std::set<std::string> KeysOf(const std::map<std::string, json>& leaves) {
  std::set<std::string> keys;
  for (const auto& [key, value] : leaves) keys.insert(key);
  return keys;
}

// The table under "## The configuration" in docs/training.md: each row names
// one or more fields in backquotes and their defaults, in the same order, in
// backquotes ("required" and "none" stand for no default).
std::map<std::string, std::string> DocumentedDefaults() {
  std::ifstream in(std::string(DIABLO_SOURCE_DIR) + "/docs/training.md");
  EXPECT_TRUE(in) << "docs/training.md not found";
  const std::regex row(R"(^\| ([^|]+) \| ([^|]+) \| .*\|$)");
  const std::regex quoted("`([^`]*)`");
  std::map<std::string, std::string> out;
  bool in_table = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("| field | default |", 0) == 0) {
      in_table = true;
      continue;
    }
    if (!in_table) continue;
    if (line.rfind("| ---", 0) == 0) continue;
    std::smatch cells;
    if (!std::regex_match(line, cells, row)) break;  // the table ended
    const std::string names = cells[1], defaults = cells[2];
    std::vector<std::string> keys, values;
    for (std::sregex_iterator it(names.begin(), names.end(), quoted), end; it != end; ++it)
      keys.push_back((*it)[1]);
    for (std::sregex_iterator it(defaults.begin(), defaults.end(), quoted), end; it != end; ++it)
      values.push_back((*it)[1]);
    if (values.empty()) values.assign(keys.size(), "");  // required / none
    EXPECT_EQ(keys.size(), values.size()) << "docs/training.md row: " << line;
    for (size_t i = 0; i < keys.size() && i < values.size(); ++i) out[keys[i]] = values[i];
  }
  return out;
}

// A documented default as the JSON value the parser would hold: JSON where
// it parses (numbers, booleans, [0.9, 0.999]), a list of names for
// "[q_proj, k_proj]", otherwise the text itself.
json DocumentedValue(const std::string& text) {
  json parsed = json::parse(text, nullptr, false);
  if (!parsed.is_discarded()) return parsed;
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    json names = json::array();
    std::string inner = text.substr(1, text.size() - 2);
    for (size_t start = 0; start <= inner.size();) {
      size_t comma = inner.find(',', start);
      if (comma == std::string::npos) comma = inner.size();
      std::string name = inner.substr(start, comma - start);
      name.erase(0, name.find_first_not_of(' '));
      names.push_back(name);
      start = comma + 1;
    }
    return names;
  }
  return text;
}

TEST(JobSchema, TheProtoAndTheParserHaveTheSameFields) {
  std::set<std::string> proto;
  ProtoLeaves(*v1::JobSpec::descriptor(), "", proto);
  const std::set<std::string> parser = KeysOf(ParserDefaults());
  for (const std::string& key : proto)
    EXPECT_TRUE(parser.count(key)) << key << " is in spec.proto but the parser has no such key";
  for (const std::string& key : parser)
    EXPECT_TRUE(proto.count(key)) << key << " is read by the parser but spec.proto lacks it";
}

TEST(JobSchema, EveryFieldTheParserWritesItAlsoReads) {
  json doc = train::ConfigToJson(train::TrainConfig{});
  doc["model"] = "/m.gguf";
  doc["data"]["train"] = "/t.jsonl";
  doc["output_dir"] = "/out";
  const train::TrainConfig parsed = train::ConfigFromJson(doc, "defaults");
  EXPECT_EQ(train::ConfigToJson(parsed), doc);
}

TEST(JobSchema, TheReferenceDocumentsEveryFieldWithTheParsersDefault) {
  const std::map<std::string, json> defaults = ParserDefaults();
  const std::map<std::string, std::string> documented = DocumentedDefaults();
  ASSERT_FALSE(documented.empty()) << "the configuration table of docs/training.md was not found";
  for (const auto& [key, value] : defaults) {
    auto it = documented.find(key);
    if (it == documented.end()) {
      ADD_FAILURE() << key << " is not in docs/training.md's configuration table";
      continue;
    }
    const json expected = it->second.empty() ? json("") : DocumentedValue(it->second);
    if (expected.is_number() && value.is_number())
      EXPECT_DOUBLE_EQ(expected.get<double>(), value.get<double>()) << key;
    else
      EXPECT_EQ(expected, value) << key << ": documented " << it->second;
  }
  for (const auto& [key, text] : documented)
    EXPECT_TRUE(defaults.count(key)) << key << " is documented but the parser has no such key";
}

}  // namespace
}  // namespace diablo
