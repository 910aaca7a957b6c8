// Writes a BpeSpec as Hugging Face tokenizer files: the inverse of
// tokenizer_json.cc.  Every choice mirrors what that reader accepts, so the
// exported tokenizer.json reads back into the same spec, and what the
// tokenizers library does with it equals what BpeTokenizer does.
#include "text/tokenizer_export.h"

#include <nlohmann/json.hpp>
#include <unordered_map>

namespace diablo::model {
namespace {

// Plain json (keys sorted): an json object looks keys up linearly,
// too slow for a vocabulary of 100k tokens.
using nlohmann::json;

json ByteLevelStep(bool add_prefix_space, bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", add_prefix_space},
          {"trim_offsets", true},
          {"use_regex", use_regex}};
}

std::string SplitPattern(const PreTokenizerConfig& pre) {
  if (pre.regex == SplitRegex::kGpt2) return std::string(kGpt2SplitRegex);
  const std::string digits =
      pre.max_digits == 1 ? R"(\p{N})" : R"(\p{N}{1,)" + std::to_string(pre.max_digits) + "}";
  return std::string(kLlama3SplitRegexHead) + digits + std::string(kLlama3SplitRegexTail);
}

// GPT-2 style splitting is ByteLevel's own regex; Llama-3 / Qwen2 splitting
// is a Split step before a regex-free ByteLevel, as their tokenizer.json has.
json PreTokenizer(const PreTokenizerConfig& pre) {
  json steps = json::array();
  if (pre.isolate_digits) {
    steps.push_back({{"type", "Digits"}, {"individual_digits", pre.individual_digits}});
  }
  if (pre.regex == SplitRegex::kLlama3) {
    steps.push_back({{"type", "Split"},
                     {"pattern", {{"Regex", SplitPattern(pre)}}},
                     {"behavior", "Isolated"},
                     {"invert", false}});
  }
  steps.push_back(ByteLevelStep(pre.add_prefix_space, pre.regex == SplitRegex::kGpt2));
  if (steps.size() == 1) return steps[0];
  return {{"type", "Sequence"}, {"pretokenizers", steps}};
}

// The spelling of a token for the special-token fields of the configs.
std::string TokenText(const BpeSpec& spec, int32_t id) {
  for (const AddedToken& t : spec.added) {
    if (t.id == id) return t.content;
  }
  return spec.vocab.at(id);
}

// BOS / EOS added by add_special: a TemplateProcessing around the text.
json PostProcessor(const BpeSpec& spec) {
  json byte_level = {{"type", "ByteLevel"},
                     {"add_prefix_space", spec.pre.add_prefix_space},
                     {"trim_offsets", false},
                     {"use_regex", true}};
  if (spec.prefix_ids.empty() && spec.suffix_ids.empty()) return byte_level;
  json single = json::array(), pair = json::array();
  json specials = json::object();
  auto add_special = [&](int32_t id, int type_id, json& out) {
    const std::string text = TokenText(spec, id);
    out.push_back({{"SpecialToken", {{"id", text}, {"type_id", type_id}}}});
    specials[text] = {{"id", text}, {"ids", {id}}, {"tokens", {text}}};
  };
  for (int type_id : {0, 1}) {
    json& out = type_id == 0 ? single : pair;
    for (int32_t id : spec.prefix_ids) add_special(id, type_id, out);
    out.push_back({{"Sequence", {{"id", type_id == 0 ? "A" : "B"}, {"type_id", type_id}}}});
    for (int32_t id : spec.suffix_ids) add_special(id, type_id, out);
    if (type_id == 0) pair = single;  // a pair repeats the template for its second text
  }
  json processing = {{"type", "TemplateProcessing"},
                     {"single", single},
                     {"pair", pair},
                     {"special_tokens", specials}};
  return {{"type", "Sequence"}, {"processors", {byte_level, processing}}};
}

// The special ids as added tokens: a special token that is only a vocabulary
// entry would be appended to the vocabulary by transformers under a new id.
std::vector<AddedToken> AddedTokens(const BpeSpec& spec) {
  std::vector<AddedToken> added = spec.added;
  for (const auto& id :
       {spec.special_ids.bos, spec.special_ids.eos, spec.special_ids.unk, spec.special_ids.pad}) {
    if (!id) continue;
    bool present = false;
    for (const AddedToken& t : added) present = present || t.id == *id;
    if (!present) added.push_back({.content = spec.vocab.at(*id), .id = *id, .special = true});
  }
  return added;
}

}  // namespace

std::string TokenizerJson(const BpeSpec& spec) {
  json vocab = json::object();
  std::unordered_map<std::string, size_t> seen;
  for (size_t id = 0; id < spec.vocab.size(); ++id) {
    const std::string& token = spec.vocab[id];
    if (token.empty()) continue;  // an unused id
    if (auto [it, fresh] = seen.emplace(token, id); !fresh) {
      throw FormatError(spec.source + ": tokens " + std::to_string(it->second) + " and " +
                        std::to_string(id) + " are both spelled " + json(token).dump() +
                        "; a tokenizer.json vocabulary cannot hold both");
    }
    vocab[token] = id;
  }
  json merges = json::array();
  for (const auto& [left, right] : spec.merges) merges.push_back(left + " " + right);

  json added = json::array();
  for (const AddedToken& t : AddedTokens(spec)) {
    // normalized false: ours match the raw text, before any normaliser.
    added.push_back({{"id", t.id},
                     {"content", t.content},
                     {"single_word", t.single_word},
                     {"lstrip", t.lstrip},
                     {"rstrip", t.rstrip},
                     {"normalized", false},
                     {"special", t.special}});
  }
  json root = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", spec.nfc ? json{{"type", "NFC"}} : json(nullptr)},
      {"pre_tokenizer", PreTokenizer(spec.pre)},
      {"post_processor", PostProcessor(spec)},
      {"decoder", ByteLevelStep(true, true)},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},  // byte-level BPE has no unknown input
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", spec.ignore_merges},
        {"vocab", vocab},
        {"merges", merges}}},
  };
  return root.dump(2, ' ', /*ensure_ascii=*/false) + "\n";
}

HfTokenizerFiles ExportHfTokenizer(const BpeSpec& spec, const TokenizerExportOptions& options) {
  json config = json::object();
  json special_map = json::object();
  const std::pair<const char*, std::optional<int32_t>> specials[] = {
      {"bos_token", spec.special_ids.bos},
      {"eos_token", spec.special_ids.eos},
      {"unk_token", spec.special_ids.unk},
      {"pad_token", spec.special_ids.pad}};
  for (const auto& [key, id] : specials) {
    if (!id) continue;
    config[key] = TokenText(spec, *id);
    special_map[key] = config[key];
  }
  // The post-processor already adds BOS / EOS; these keys only inform.
  config["add_bos_token"] = !spec.prefix_ids.empty();
  config["add_eos_token"] = !spec.suffix_ids.empty();
  config["clean_up_tokenization_spaces"] = false;
  if (options.model_max_length > 0) config["model_max_length"] = options.model_max_length;
  if (!options.chat_template.empty()) config["chat_template"] = options.chat_template;
  // The generic class loads tokenizer.json as written; a model-specific
  // class (LlamaTokenizerFast, Qwen2Tokenizer) may rebuild parts of it.
  config["tokenizer_class"] = "PreTrainedTokenizerFast";

  HfTokenizerFiles files;
  files["tokenizer.json"] = TokenizerJson(spec);
  files["tokenizer_config.json"] = config.dump(2, ' ', false) + "\n";
  files["special_tokens_map.json"] = special_map.dump(2, ' ', false) + "\n";
  return files;
}

HfTokenizerFiles ExportGgufTokenizer(const GgufFile& file, const std::string& path) {
  if (file.Has("tokenizer.ggml.model") && file.GetString("tokenizer.ggml.model") != "gpt2") {
    throw FormatError(path + ": tokenizer.ggml.model is \"" +
                      file.GetString("tokenizer.ggml.model") +
                      "\"; only byte-level BPE (\"gpt2\") vocabularies can be exported to "
                      "Hugging Face files (hint: merge from the model's Hugging Face directory, "
                      "which carries its own tokenizer files)");
  }
  const BpeSpec spec = ReadGgufBpeSpec(file, path);
  TokenizerExportOptions options;
  if (file.Has("tokenizer.chat_template")) {
    options.chat_template = file.GetString("tokenizer.chat_template");
  }
  const std::string arch =
      file.Has("general.architecture") ? file.GetString("general.architecture") : "";
  options.model_max_length = static_cast<int64_t>(file.GetUintOr(arch + ".context_length", 0));
  HfTokenizerFiles files = ExportHfTokenizer(spec, options);

  json generation = {{"_from_model_config", true}};
  if (spec.special_ids.bos) generation["bos_token_id"] = *spec.special_ids.bos;
  if (spec.special_ids.eos) generation["eos_token_id"] = *spec.special_ids.eos;
  if (spec.special_ids.pad) generation["pad_token_id"] = *spec.special_ids.pad;
  files["generation_config.json"] = generation.dump(2) + "\n";
  return files;
}

}  // namespace diablo::model
