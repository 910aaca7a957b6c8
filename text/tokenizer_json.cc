// Reads a Hugging Face tokenizer.json of the byte-level BPE kind (GPT-2,
// Llama-3, Qwen2, SmolLM) into a BpeSpec.  Only configurations whose
// behaviour this code reproduces are accepted; anything else is refused with
// the JSON path of the item, so a tokenizer is never silently approximated.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "formats/bounded_json.h"
#include "text/bpe_tokenizer.h"

namespace diablo::model {
namespace {

using nlohmann::json;

class JsonReader {
 public:
  explicit JsonReader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void Fail(const std::string& where, const std::string& what) const {
    throw FormatError(path_ + ": " + where + ": " + what);
  }
  const json& Field(const json& obj, const char* key, const std::string& where) const {
    if (!obj.is_object() || !obj.contains(key)) Fail(where, std::string("missing \"") + key + "\"");
    return obj.at(key);
  }
  std::string String(const json& v, const std::string& where) const {
    if (!v.is_string()) Fail(where, "expected a string, found " + std::string(v.type_name()));
    return v.get<std::string>();
  }
  const json& Array(const json& v, const std::string& where) const {
    if (!v.is_array()) Fail(where, "expected an array, found " + std::string(v.type_name()));
    return v;
  }
  // obj[key] as a string, `fallback` when absent or null; obj must be an object.
  std::string StringOr(const json& obj, const char* key, const std::string& fallback,
                       const std::string& where) const {
    if (!obj.is_object()) Fail(where, "expected an object, found " + std::string(obj.type_name()));
    if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
    return String(obj.at(key), where + "." + key);
  }
  bool BoolOr(const json& obj, const char* key, bool fallback, const std::string& where) const {
    if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
    if (!obj.at(key).is_boolean()) Fail(where + "." + key, "expected true or false");
    return obj.at(key).get<bool>();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

json ReadJsonFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FormatError(path + ": cannot open the file for reading");
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return ParseBoundedJson(buffer.str());
  } catch (const json::exception& e) {  // parse_error, or out_of_range for 1e999
    throw FormatError(path + ": not valid JSON (" + e.what() + ")");
  } catch (const JsonTooDeep& e) {
    throw FormatError(path + ": " + e.what());
  }
}

void ReadSplitRegex(const JsonReader& r, const json& step, const std::string& where,
                    PreTokenizerConfig* pre) {
  const json& pattern = r.Field(step, "pattern", where);
  if (!pattern.contains("Regex"))
    r.Fail(where + ".pattern", "only {\"Regex\": ...} splits are supported");
  const std::string regex = r.String(pattern.at("Regex"), where + ".pattern.Regex");
  const std::string behavior = r.StringOr(step, "behavior", "Isolated", where);
  if (behavior != "Isolated" || r.BoolOr(step, "invert", false, where)) {
    r.Fail(where, "only Split steps with behavior \"Isolated\" and invert false are supported");
  }
  if (regex == kGpt2SplitRegex) {
    pre->regex = SplitRegex::kGpt2;
    return;
  }
  std::string_view v = regex;
  if (v.starts_with(kLlama3SplitRegexHead) && v.ends_with(kLlama3SplitRegexTail)) {
    const std::string_view digits =
        v.substr(kLlama3SplitRegexHead.size(),
                 v.size() - kLlama3SplitRegexHead.size() - kLlama3SplitRegexTail.size());
    if (digits == R"(\p{N})") {
      pre->regex = SplitRegex::kLlama3;
      pre->max_digits = 1;
      return;
    }
    if (digits.starts_with(R"(\p{N}{1,)") && digits.ends_with("}") && digits.size() == 10 &&
        digits[8] >= '1' && digits[8] <= '9') {
      pre->regex = SplitRegex::kLlama3;
      pre->max_digits = digits[8] - '0';
      return;
    }
  }
  r.Fail(where + ".pattern.Regex",
         "unsupported split regex " + json(regex).dump() +
             "; this version reproduces the GPT-2, Llama-3 and Qwen2 patterns only");
}

// Fills pre from the pre_tokenizer object; requires a ByteLevel step.
void ReadPreTokenizer(const JsonReader& r, const json& root, BpeSpec* spec) {
  const std::string where = "pre_tokenizer";
  if (!root.contains("pre_tokenizer") || root["pre_tokenizer"].is_null()) {
    r.Fail(where, "missing; a byte-level BPE tokenizer needs a ByteLevel pre-tokenizer");
  }
  const json& pt = root["pre_tokenizer"];
  std::vector<std::pair<const json*, std::string>> steps;
  if (r.StringOr(pt, "type", "", where) == "Sequence") {
    const json& list = r.Field(pt, "pretokenizers", where);
    if (!list.is_array()) r.Fail(where + ".pretokenizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i) {
      steps.emplace_back(&list[i], where + ".pretokenizers[" + std::to_string(i) + "]");
    }
  } else {
    steps.emplace_back(&pt, where);
  }
  PreTokenizerConfig& cfg = spec->pre;
  cfg.regex = SplitRegex::kNone;
  bool byte_level = false, split_seen = false;
  for (const auto& [step, at] : steps) {
    const std::string type = r.String(r.Field(*step, "type", at), at + ".type");
    if (type == "ByteLevel") {
      byte_level = true;
      cfg.add_prefix_space = r.BoolOr(*step, "add_prefix_space", false, at);
      if (r.BoolOr(*step, "use_regex", true, at)) {
        if (split_seen) r.Fail(at, "a regex ByteLevel step after a Split step is not supported");
        cfg.regex = SplitRegex::kGpt2;
        split_seen = true;
      }
    } else if (type == "Split") {
      if (split_seen || byte_level) r.Fail(at, "a second split step is not supported");
      ReadSplitRegex(r, *step, at, &cfg);
      split_seen = true;
    } else if (type == "Digits") {
      if (split_seen || byte_level) r.Fail(at, "a Digits step after the split is not supported");
      cfg.isolate_digits = true;
      cfg.individual_digits = r.BoolOr(*step, "individual_digits", false, at);
    } else if (type == "Metaspace") {
      r.Fail(at,
             "a SentencePiece-style (Metaspace) tokenizer.json is not supported; point "
             "--model at the model's tokenizer.model instead");
    } else {
      r.Fail(at, "unsupported pre-tokenizer type \"" + type +
                     "\" (supported: ByteLevel, Split, Digits, Sequence)");
    }
  }
  if (!byte_level) r.Fail(where, "no ByteLevel step; only byte-level BPE is supported");
  spec->pre_name = cfg.isolate_digits && cfg.regex == SplitRegex::kGpt2      ? "smollm"
                   : cfg.regex == SplitRegex::kGpt2                          ? "gpt2"
                   : cfg.regex == SplitRegex::kLlama3 && cfg.max_digits == 1 ? "qwen2"
                   : cfg.regex == SplitRegex::kLlama3                        ? "llama3"
                                                                             : "";
}

// Sequences inside sequences: real tokenizers nest at most one level; a
// file may come from a tenant (the scheduler reads it at submit), so the
// recursion below is bounded rather than left to the stack.
constexpr int kMaxSequenceDepth = 4;

void CheckSequenceDepth(const JsonReader& r, const std::string& where, int depth) {
  if (depth > kMaxSequenceDepth)
    r.Fail(where, "Sequence nested more than " + std::to_string(kMaxSequenceDepth) + " deep");
}

// Byte-level families use no normaliser, or NFC (Qwen2).
void ReadNormalizer(const JsonReader& r, const json& n, const std::string& where, BpeSpec* spec,
                    int depth = 0) {
  if (n.is_null()) return;
  const std::string type = r.String(r.Field(n, "type", where), where + ".type");
  if (type == "NFC") {
    spec->nfc = true;
  } else if (type == "Sequence") {
    CheckSequenceDepth(r, where, depth + 1);
    const json& list = r.Array(r.Field(n, "normalizers", where), where + ".normalizers");
    for (size_t i = 0; i < list.size(); ++i) {
      ReadNormalizer(r, list[i], where + ".normalizers[" + std::to_string(i) + "]", spec,
                     depth + 1);
    }
  } else {
    r.Fail(where, "type \"" + type +
                      "\" is not supported (byte-level BPE tokenizers use none "
                      "or NFC)");
  }
}

// TemplateProcessing's single-sequence template: special tokens before and
// after the text "A".
void ReadPostProcessor(const JsonReader& r, const json& pp, const std::string& where, BpeSpec* spec,
                       int depth = 0) {
  if (pp.is_null()) return;
  const std::string type = r.String(r.Field(pp, "type", where), where + ".type");
  if (type == "ByteLevel") return;  // only adjusts offsets, which we compute exactly
  if (type == "Sequence") {
    CheckSequenceDepth(r, where, depth + 1);
    const json& list = r.Array(r.Field(pp, "processors", where), where + ".processors");
    for (size_t i = 0; i < list.size(); ++i) {
      ReadPostProcessor(r, list[i], where + ".processors[" + std::to_string(i) + "]", spec,
                        depth + 1);
    }
    return;
  }
  if (type != "TemplateProcessing") {
    r.Fail(where, "unsupported post-processor type \"" + type +
                      "\" (supported: TemplateProcessing, ByteLevel, Sequence)");
  }
  const json& single = r.Array(r.Field(pp, "single", where), where + ".single");
  const json& specials = pp.contains("special_tokens") ? pp["special_tokens"] : json::object();
  bool seen_text = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string at = where + ".single[" + std::to_string(i) + "]";
    if (single[i].contains("Sequence")) {
      seen_text = true;
      continue;
    }
    const std::string name =
        r.String(r.Field(r.Field(single[i], "SpecialToken", at), "id", at), at);
    if (!specials.contains(name))
      r.Fail(at, "special token \"" + name + "\" is not in special_tokens");
    for (const json& id : r.Field(specials[name], "ids", where + ".special_tokens." + name)) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24))
        r.Fail(where + ".special_tokens." + name, "ids must be integers in [0, 16777216]");
      (seen_text ? spec->suffix_ids : spec->prefix_ids).push_back(id.get<int32_t>());
    }
  }
}

// The vocabulary is a table indexed by id: one far-off id would allocate a
// table of that size (16M entries is half a GiB of empty strings) from a
// small file.  Ids may leave gaps, but stay within twice the number of
// tokens the file declares, plus room for a padded vocabulary.
size_t TokenIdLimit(const json& root) {
  size_t declared = 0;
  if (root.contains("model") && root["model"].is_object() && root["model"].contains("vocab"))
    declared += root["model"]["vocab"].size();
  if (root.contains("added_tokens")) declared += root["added_tokens"].size();
  return std::min<size_t>(2 * declared + 1024, (size_t{1} << 24) + 1);
}

void CheckTokenId(const JsonReader& r, const std::string& where, size_t id, size_t limit) {
  if (id >= limit)
    r.Fail(where, "id " + std::to_string(id) +
                      " is far beyond the tokens the file declares (ids "
                      "must be below " +
                      std::to_string(limit) + ")");
}

void ReadModel(const JsonReader& r, const json& model, size_t id_limit, BpeSpec* spec) {
  const std::string type = r.StringOr(model, "type", "BPE", "model");
  if (type != "BPE") {
    r.Fail("model.type", "is \"" + type +
                             "\"; only byte-level BPE tokenizer.json files are "
                             "supported (use tokenizer.model for SentencePiece models)");
  }
  if (r.BoolOr(model, "byte_fallback", false, "model")) {
    r.Fail("model.byte_fallback",
           "is true: a SentencePiece-style BPE; point --model at the "
           "model's tokenizer.model instead");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
      r.Fail(std::string("model.") + key, "is set; byte-level BPE does not use it");
    }
  }
  if (model.contains("dropout") && model["dropout"].is_number() &&
      model["dropout"].get<double>() > 0) {
    r.Fail("model.dropout", "BPE dropout is for training a tokenizer, not for using one");
  }
  spec->ignore_merges = r.BoolOr(model, "ignore_merges", false, "model");

  const json& vocab = r.Field(model, "vocab", "model");
  if (!vocab.is_object()) r.Fail("model.vocab", "expected an object of token -> id");
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24)) {
      r.Fail("model.vocab." + token, "id must be an integer in [0, 16777216]");
    }
    const size_t i = id.get<size_t>();
    CheckTokenId(r, "model.vocab." + token, i, id_limit);
    if (i >= spec->vocab.size()) spec->vocab.resize(i + 1);
    spec->vocab[i] = token;
  }
  const json& merges = r.Field(model, "merges", "model");
  if (!merges.is_array()) r.Fail("model.merges", "expected an array");
  spec->merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string at = "model.merges[" + std::to_string(i) + "]";
    const json& m = merges[i];
    if (m.is_string()) {
      const std::string line = m.get<std::string>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        r.Fail(at, "\"" + line + "\" is not two tokens separated by one space");
      }
      spec->merges.emplace_back(line.substr(0, space), line.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec->merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      r.Fail(at, "expected \"left right\" or [\"left\", \"right\"]");
    }
  }
}

void ReadAddedTokens(const JsonReader& r, const json& root, size_t id_limit, BpeSpec* spec) {
  if (!root.contains("added_tokens")) return;
  const json& list = root["added_tokens"];
  if (!list.is_array()) r.Fail("added_tokens", "expected an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string at = "added_tokens[" + std::to_string(i) + "]";
    AddedToken t;
    const json& id = r.Field(list[i], "id", at);
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24)) {
      r.Fail(at + ".id", "must be an integer in [0, 16777216]");
    }
    t.id = id.get<int32_t>();
    CheckTokenId(r, at + ".id", static_cast<size_t>(t.id), id_limit);
    t.content = r.String(r.Field(list[i], "content", at), at + ".content");
    if (t.content.empty()) r.Fail(at + ".content", "is empty");
    t.special = r.BoolOr(list[i], "special", false, at);
    t.lstrip = r.BoolOr(list[i], "lstrip", false, at);
    t.rstrip = r.BoolOr(list[i], "rstrip", false, at);
    t.single_word = r.BoolOr(list[i], "single_word", false, at);
    // Added tokens may lie past the model's vocabulary; they extend it.
    if (static_cast<size_t>(t.id) >= spec->vocab.size()) spec->vocab.resize(t.id + 1);
    if (spec->vocab[t.id].empty()) spec->vocab[t.id] = t.content;
    spec->added.push_back(std::move(t));
  }
}

// tokenizer_config.json names the special tokens: "bos_token": "<s>" or
// {"content": "<s>", ...}.
std::optional<int32_t> ConfigToken(const json& config, const char* key, const BpeSpec& spec,
                                   const std::string& config_path) {
  if (!config.contains(key) || config[key].is_null()) return std::nullopt;
  const json& v = config[key];
  std::string name;
  if (v.is_string()) {
    name = v.get<std::string>();
  } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    name = v["content"].get<std::string>();
  } else {
    throw FormatError(config_path + ": " + key + ": expected a string or {\"content\": ...}");
  }
  for (const AddedToken& t : spec.added) {
    if (t.content == name) return t.id;
  }
  for (size_t id = 0; id < spec.vocab.size(); ++id) {
    if (spec.vocab[id] == name) return static_cast<int32_t>(id);
  }
  throw FormatError(config_path + ": " + key + " \"" + name + "\" is not a token of " +
                    spec.source);
}

}  // namespace

BpeSpec ReadTokenizerJsonSpec(const std::string& path) {
  const json root = ReadJsonFile(path);
  JsonReader r(path);
  if (!root.is_object()) r.Fail("top level", "expected a JSON object");
  BpeSpec spec;
  spec.source = path;
  const size_t id_limit = TokenIdLimit(root);
  ReadModel(r, r.Field(root, "model", "top level"), id_limit, &spec);
  ReadAddedTokens(r, root, id_limit, &spec);
  static const json kNone;
  ReadNormalizer(r, root.contains("normalizer") ? root["normalizer"] : kNone, "normalizer", &spec);
  ReadPreTokenizer(r, root, &spec);
  ReadPostProcessor(r, root.contains("post_processor") ? root["post_processor"] : kNone,
                    "post_processor", &spec);
  if (root.contains("decoder") && !root["decoder"].is_null() &&
      r.StringOr(root["decoder"], "type", "", "decoder") != "ByteLevel") {
    r.Fail("decoder", "only the ByteLevel decoder is supported");
  }
  const json& model = root["model"];
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    spec.special_ids.unk = ConfigToken(model, "unk_token", spec, path);
  }
  const std::string config_path =
      (std::filesystem::path(path).parent_path() / "tokenizer_config.json").string();
  if (std::filesystem::exists(config_path)) {
    const json config = ReadJsonFile(config_path);
    spec.special_ids.bos = ConfigToken(config, "bos_token", spec, config_path);
    spec.special_ids.eos = ConfigToken(config, "eos_token", spec, config_path);
    spec.special_ids.pad = ConfigToken(config, "pad_token", spec, config_path);
    if (auto unk = ConfigToken(config, "unk_token", spec, config_path)) spec.special_ids.unk = unk;
  } else {
    // Without a config, what the post-processor adds is the best evidence.
    if (!spec.prefix_ids.empty()) spec.special_ids.bos = spec.prefix_ids.front();
    if (!spec.suffix_ids.empty()) spec.special_ids.eos = spec.suffix_ids.back();
  }
  return spec;
}

std::unique_ptr<BpeTokenizer> LoadTokenizerJson(const std::string& path) {
  return std::make_unique<BpeTokenizer>(ReadTokenizerJsonSpec(path));
}

}  // namespace diablo::model
