// Unit tests of byte-level BPE on small tokenizer.json files written here:
// merge priority, added and special tokens, BOS from the post-processor,
// decoding, and clear errors for files this code must refuse.
#include "text/bpe_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/text/test_util.h"
#include "text/unicode_classes.h"

namespace diablo::model {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::ScratchDir;

std::string ByteChar(uint8_t b) {
  std::string s;
  AppendUtf8(ByteToChar(b), &s);
  return s;
}

// ids 0..255 are the single bytes (so byte b has id b); `extra` tokens follow
// from 256 in order.
json MakeTokenizer(const std::vector<std::string>& extra, const json& merges) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteChar(static_cast<uint8_t>(b))] = b;
  for (size_t i = 0; i < extra.size(); ++i) vocab[extra[i]] = 256 + i;
  return {
      {"version", "1.0"},
      {"added_tokens", json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
  };
}

std::unique_ptr<BpeTokenizer> Load(const ScratchDir& dir, const json& j) {
  const std::string path = dir / "tokenizer.json";
  testing::WriteFile(path, j.dump());
  return LoadTokenizerJson(path);
}

// The message of the FormatError that loading `j` throws ("" if none).
std::string LoadError(const ScratchDir& dir, const json& j) {
  try {
    Load(dir, j);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

TEST(BpeMerges, LowestRankMergesFirst) {
  ScratchDir dir;
  // "abc" with b+c ranked before a+b: a | bc, and no merge joins those.
  auto t = Load(dir, MakeTokenizer({"ab", "bc"}, json::array({"b c", "a b"})));
  EXPECT_THAT(t->Encode("abc"), ElementsAre('a', 257));
  EXPECT_EQ(t->Decode(t->Encode("abc")), "abc");
  // The other order: ab | c.
  auto u = Load(dir, MakeTokenizer({"ab", "bc"}, json::array({"a b", "b c"})));
  EXPECT_THAT(u->Encode("abc"), ElementsAre(256, 'c'));
}

TEST(BpeMerges, MergedTokensMergeFurtherAndPairFormIsAccepted) {
  ScratchDir dir;
  auto t =
      Load(dir, MakeTokenizer({"ab", "abc"},
                              json::array({json::array({"a", "b"}), json::array({"ab", "c"})})));
  EXPECT_THAT(t->Encode("abcab"), ElementsAre(257, 256));
}

TEST(BpeMerges, TiesGoToTheLeftmostPair) {
  ScratchDir dir;
  auto t = Load(dir, MakeTokenizer({"aa"}, json::array({"a a"})));
  EXPECT_THAT(t->Encode("aaa"), ElementsAre(256, 'a'));
  EXPECT_THAT(t->Encode("aaaa"), ElementsAre(256, 256));
}

TEST(BpeMerges, SpaceIsSpelledAsItsByteCharacter) {
  ScratchDir dir;
  const std::string space = ByteChar(' ');  // "Ġ"
  auto t = Load(dir, MakeTokenizer({space + "a"}, json::array({space + " a"})));
  EXPECT_THAT(t->Encode("a a"), ElementsAre('a', 256));
  EXPECT_EQ(t->IdToToken(256),
            "\xC4\xA0"
            "a");
  EXPECT_EQ(t->TokenToId("\xC4\xA0"
                         "a"),
            256);
}

TEST(BpeDecode, MultiByteCharactersRoundTripAndBrokenBytesBecomeReplacement) {
  ScratchDir dir;
  auto t = Load(dir, MakeTokenizer({}, json::array()));
  const std::string text = "café 東京 👍🏽";
  EXPECT_EQ(t->Encode(text).size(), text.size());  // no merges: one token per byte
  EXPECT_EQ(t->Decode(t->Encode(text)), text);
  const std::vector<int32_t> half_euro = {0xE2, 0x82};
  EXPECT_EQ(t->Decode(half_euro), "\xEF\xBF\xBD");
  EXPECT_THROW(t->Decode(std::vector<int32_t>{256}), std::out_of_range);
}

json WithAddedTokens(json j) {
  j["added_tokens"] = json::array({
      {{"id", 256}, {"content", "<|x|>"}, {"special", true}},
      {{"id", 257}, {"content", "<u>"}, {"special", false}},
      {{"id", 258}, {"content", "<|x|>>"}, {"special", true}},
      {{"id", 259}, {"content", "[S]"}, {"special", true}, {"lstrip", true}, {"rstrip", true}},
  });
  return j;
}

TEST(AddedTokens, MatchedBeforePreTokenizationLongestFirst) {
  ScratchDir dir;
  auto t =
      Load(dir, WithAddedTokens(MakeTokenizer({"<|x|>", "<u>", "<|x|>>", "[S]"}, json::array())));
  EXPECT_THAT(t->Encode("a<|x|>b"), ElementsAre('a', 256, 'b'));
  EXPECT_THAT(t->Encode("<|x|>>"), ElementsAre(258));
  EXPECT_THAT(t->Encode("<u><u>"), ElementsAre(257, 257));
  EXPECT_THAT(t->Encode("<|x|"), ElementsAre('<', '|', 'x', '|'));  // incomplete: plain text
  EXPECT_TRUE(t->IsSpecial(256));
  EXPECT_FALSE(t->IsSpecial(257));
}

TEST(AddedTokens, ParseSpecialOffLeavesSpecialTokensAsTextButNotOtherAddedOnes) {
  ScratchDir dir;
  auto t =
      Load(dir, WithAddedTokens(MakeTokenizer({"<|x|>", "<u>", "<|x|>>", "[S]"}, json::array())));
  EXPECT_THAT(t->Encode("<|x|><u>", {.parse_special = false}),
              ElementsAre('<', '|', 'x', '|', '>', 257));
}

TEST(AddedTokens, StripFlagsSwallowNeighbouringWhitespace) {
  ScratchDir dir;
  auto t =
      Load(dir, WithAddedTokens(MakeTokenizer({"<|x|>", "<u>", "<|x|>>", "[S]"}, json::array())));
  EXPECT_THAT(t->Encode("a  [S]  b"), ElementsAre('a', 259, 'b'));
}

TEST(AddedTokens, DecodeWritesThemRawAndSkipsOnlySpecialOnesWhenAsked) {
  ScratchDir dir;
  auto t =
      Load(dir, WithAddedTokens(MakeTokenizer({"<|x|>", "<u>", "<|x|>>", "[S]"}, json::array())));
  const std::vector<int32_t> ids = {'h', 256, 'i', 257};
  EXPECT_EQ(t->Decode(ids), "h<|x|>i<u>");
  EXPECT_EQ(t->Decode(ids, /*skip_special=*/true), "hi<u>");
}

TEST(PostProcessor, TemplateProcessingAddsBosOnlyWithAddSpecial) {
  ScratchDir dir;
  json j = MakeTokenizer({"<bos>"}, json::array());
  j["added_tokens"] = json::array({{{"id", 256}, {"content", "<bos>"}, {"special", true}}});
  j["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       json::array({
           {{"type", "ByteLevel"}},
           {{"type", "TemplateProcessing"},
            {"single", json::array({{{"SpecialToken", {{"id", "<bos>"}, {"type_id", 0}}}},
                                    {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
            {"special_tokens",
             {{"<bos>", {{"id", "<bos>"}, {"ids", {256}}, {"tokens", {"<bos>"}}}}}}},
       })}};
  auto t = Load(dir, j);
  EXPECT_THAT(t->Encode("hi"), ElementsAre(256, 'h', 'i'));
  EXPECT_THAT(t->Encode("hi", /*add_special=*/false), ElementsAre('h', 'i'));
  EXPECT_EQ(t->bos_id(), 256);  // no tokenizer_config.json: the template's token
  const Encoding e = t->EncodeWithOffsets("hi", {});
  EXPECT_EQ(e.offsets[0], (std::pair<size_t, size_t>{0, 0}));
  EXPECT_EQ(e.offsets[2], (std::pair<size_t, size_t>{1, 2}));
}

TEST(TokenizerConfig, NamesBosAndEos) {
  ScratchDir dir;
  json j = MakeTokenizer({"<s>", "</s>"}, json::array());
  j["added_tokens"] = json::array({{{"id", 256}, {"content", "<s>"}, {"special", true}},
                                   {{"id", 257}, {"content", "</s>"}, {"special", true}}});
  testing::WriteFile(dir / "tokenizer_config.json",
                     R"({"bos_token": "<s>", "eos_token": {"content": "</s>"}})");
  auto t = Load(dir, j);
  EXPECT_EQ(t->bos_id(), 256);
  EXPECT_EQ(t->eos_id(), 257);
}

json WithSplit(json j, const std::string& regex) {
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       json::array({{{"type", "Split"},
                     {"pattern", {{"Regex", regex}}},
                     {"behavior", "Isolated"},
                     {"invert", false}},
                    {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
  return j;
}

constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

TEST(PreTokenizerConfig, RecognisesLlama3AndQwen2Regexes) {
  ScratchDir dir;
  auto llama3 = Load(dir, WithSplit(MakeTokenizer({}, json::array()), kLlama3Regex));
  EXPECT_EQ(llama3->pre_tokenizer().regex, SplitRegex::kLlama3);
  EXPECT_EQ(llama3->pre_tokenizer().max_digits, 3);
  std::string qwen = kLlama3Regex;
  qwen.replace(qwen.find(R"(\p{N}{1,3})"), 10, R"(\p{N})");
  auto qwen2 = Load(dir, WithSplit(MakeTokenizer({}, json::array()), qwen));
  EXPECT_EQ(qwen2->pre_tokenizer().max_digits, 1);
  // With merges for "1", "12", "123": digits group by three, letters apart.
  auto t = Load(
      dir, WithSplit(MakeTokenizer({"12", "123"}, json::array({"1 2", "12 3"})), kLlama3Regex));
  EXPECT_THAT(t->Encode("1231234"), ElementsAre(257, 257, '4'));
}

TEST(PreTokenizerConfig, DigitsStepBeforeByteLevelIsSmolLM) {
  ScratchDir dir;
  json j = MakeTokenizer({"12"}, json::array({"1 2"}));
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}},
                                     {{"type", "ByteLevel"}, {"use_regex", true}}})}};
  auto t = Load(dir, j);
  EXPECT_TRUE(t->pre_tokenizer().isolate_digits);
  EXPECT_THAT(t->Encode("12"), ElementsAre('1', '2'));  // the merge never sees "12"
}

TEST(Normalizer, NfcComposesBeforeSplittingAndOffsetsPointIntoTheInput) {
  ScratchDir dir;
  json j = MakeTokenizer({}, json::array());
  j["normalizer"] = {{"type", "NFC"}};
  auto t = Load(dir, j);
  const std::string decomposed = "e\xCC\x81!";  // e + combining acute, then !
  const Encoding e = t->EncodeWithOffsets(decomposed, {});
  // é is two bytes (C3 A9) after NFC, and both tokens map to the three input bytes.
  EXPECT_THAT(e.ids, ElementsAre(0xC3, 0xA9, '!'));
  EXPECT_EQ(e.offsets[0], (std::pair<size_t, size_t>{0, 3}));
  EXPECT_EQ(e.offsets[2], (std::pair<size_t, size_t>{3, 4}));
  EXPECT_EQ(t->Decode(e.ids), "\xC3\xA9!");
  EXPECT_THAT(t->Describe(), HasSubstr("NFC"));
}

TEST(BpeConcurrency, ThreadsSharingOneTokenizerGetTheSameIds) {
  ScratchDir dir;
  auto t = Load(dir, MakeTokenizer({"ab", "abc",
                                    "\xC4\xA0"
                                    "ab"},
                                   json::array({"a b", "ab c", "\xC4\xA0 ab"})));
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i)
    texts.push_back("abc ab" + std::string(i % 7, 'c') + " x" + std::to_string(i));
  std::vector<std::vector<int32_t>> expected;
  for (const auto& text : texts) expected.push_back(t->Encode(text));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          if (t->Encode(texts[(i + k * 31) % texts.size()]) !=
              expected[(i + k * 31) % texts.size()]) {
            ++mismatches[k];
          }
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(MalformedTokenizerJson, ErrorsNameTheFileAndTheItem) {
  ScratchDir dir;
  const std::string path = dir / "tokenizer.json";
  testing::WriteFile(path, "{\"model\": ");
  try {
    LoadTokenizerJson(path);
    FAIL() << "truncated JSON was accepted";
  } catch (const FormatError& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
    EXPECT_THAT(e.what(), HasSubstr("not valid JSON"));
  }
  const json good = MakeTokenizer({"ab"}, json::array({"a b"}));

  json j = good;
  j["model"]["type"] = "Unigram";
  EXPECT_THAT(LoadError(dir, j), HasSubstr("model.type"));

  j = good;
  j["model"]["merges"] = json::array({"a q", "x y"});
  j["model"]["merges"][0] = "a zz";
  EXPECT_THAT(LoadError(dir, j), HasSubstr("merge #0 \"a zz\""));

  j = good;
  j["model"]["merges"] = json::array({42});
  EXPECT_THAT(LoadError(dir, j), HasSubstr("model.merges[0]"));

  j = good;
  j["model"]["merges"] = json::array({"a b c"});
  EXPECT_THAT(LoadError(dir, j), HasSubstr("not two tokens"));

  j = good;
  j["model"].erase("vocab");
  EXPECT_THAT(LoadError(dir, j), HasSubstr("missing \"vocab\""));

  j = WithSplit(good, R"(\w+|\s+)");
  EXPECT_THAT(LoadError(dir, j), HasSubstr("unsupported split regex"));

  j = good;
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  EXPECT_THAT(LoadError(dir, j), HasSubstr("tokenizer.model"));

  j = good;
  j["model"]["byte_fallback"] = true;
  EXPECT_THAT(LoadError(dir, j), HasSubstr("byte_fallback"));

  j = good;
  j["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_THAT(LoadError(dir, j), HasSubstr("normalizer"));

  j = good;
  j["added_tokens"] = json::array({{{"id", "seven"}, {"content", "<x>"}}});
  EXPECT_THAT(LoadError(dir, j), HasSubstr("added_tokens[0].id"));

  j = good;
  j["pre_tokenizer"] = nullptr;
  EXPECT_THAT(LoadError(dir, j), HasSubstr("ByteLevel"));
}

// Found by tests/fuzz/tokenizer_json_fuzz: a value of the wrong JSON type
// where the reader expected an object, an array or a string escaped as
// nlohmann::json's own exception (naming neither file nor item), a number
// JSON cannot hold escaped as out_of_range, and a post-processor id past
// 2^32 wrapped silently to a small id.
TEST(MalformedTokenizerJson, WrongJsonTypesAreFormatErrorsNamingTheItem) {
  ScratchDir dir;
  const json good = MakeTokenizer({"ab"}, json::array({"a b"}));
  struct Case {
    const char* pointer;
    const char* value;
    const char* error;
  };
  const Case cases[] = {
      {"/pre_tokenizer", "5", "pre_tokenizer: expected an object, found number"},
      {"/pre_tokenizer/type", "[]", "pre_tokenizer.type: expected a string"},
      {"/pre_tokenizer", R"({"type": "Split", "pattern": {"Regex": "x"}, "behavior": 5})",
       "pre_tokenizer.behavior: expected a string"},
      {"/decoder", "[1]", "decoder: expected an object, found array"},
      {"/model", R"("BPE")", "model: expected an object, found string"},
      {"/model/type", "3", "model.type: expected a string"},
      {"/normalizer", R"({"type": "Sequence", "normalizers": {"a": {"type": "NFC"}}})",
       "normalizer.normalizers: expected an array"},
      {"/post_processor", R"({"type": "Sequence", "processors": "x"})",
       "post_processor.processors: expected an array"},
      {"/post_processor", R"({"type": "TemplateProcessing", "single": "x"})",
       "post_processor.single: expected an array"},
      {"/post_processor",
       R"({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<b>"}}],)"
       R"( "special_tokens": {"<b>": {"ids": [4294967297]}}})",
       "post_processor.special_tokens.<b>: ids must be integers in [0, 16777216]"},
  };
  for (const Case& c : cases) {
    json j = good;
    j[json::json_pointer(c.pointer)] = json::parse(c.value);
    EXPECT_THAT(LoadError(dir, j), HasSubstr(c.error)) << c.pointer << " = " << c.value;
  }
  std::string text = good.dump();
  text.insert(text.size() - 1, R"(, "x": 1e999)");
  testing::WriteFile(dir / "tokenizer.json", text);
  try {
    LoadTokenizerJson(dir / "tokenizer.json");
    FAIL() << "1e999 was accepted";
  } catch (const FormatError& e) {
    EXPECT_THAT(e.what(), HasSubstr("not valid JSON"));
  }
}

// A tokenizer.json may come from a tenant: the scheduler reads an uploaded
// model's tokenizer at submit.  A far-off id must not allocate a table of
// its size, and nesting must not be followed down the stack.
TEST(MalformedTokenizerJson, HostileIdsAndNestingAreRefusedCheaply) {
  ScratchDir dir;
  const json good = MakeTokenizer({"ab"}, json::array({"a b"}));

  json j = good;
  j["model"]["vocab"]["zz"] = 16000000;
  EXPECT_THAT(LoadError(dir, j), HasSubstr("model.vocab.zz: id 16000000 is far beyond"));
  j = good;
  j["added_tokens"] = json::array({{{"id", 16000000}, {"content", "<x>"}}});
  EXPECT_THAT(LoadError(dir, j), HasSubstr("added_tokens[0].id: id 16000000 is far beyond"));
  j = good;
  j["added_tokens"] = json::array({{{"id", 300}, {"content", "<pad>"}}});
  EXPECT_EQ(Load(dir, j)->vocab_size(), 301u) << "a gap in the ids is fine";

  // Sequences inside Sequences: 6 deep is refused by the reader, 100,000
  // deep (a few MB of JSON, far more stack than a thread has if each level
  // were a call) already by the parser.
  for (const char* key : {"normalizer", "post_processor"}) {
    for (const auto& [depth, error] : {std::pair<int, std::string>{6, "nested more than 4 deep"},
                                       {100000, "nested deeper than 100 levels"}}) {
      SCOPED_TRACE(std::string(key) + " " + std::to_string(depth));
      const bool normalizer = std::string(key) == "normalizer";
      const std::string open = normalizer ? R"({"type":"Sequence","normalizers":[)"
                                          : R"({"type":"Sequence","processors":[)";
      std::string nested;
      for (int i = 0; i < depth; ++i) nested += open;
      nested += normalizer ? R"({"type":"NFC"})" : R"({"type":"ByteLevel"})";
      for (int i = 0; i < depth; ++i) nested += "]}";
      json without = good;
      without.erase(key);
      std::string text = without.dump();
      text.insert(text.size() - 1, std::string(",\"") + key + "\":" + nested);
      testing::WriteFile(dir / "tokenizer.json", text);
      try {
        LoadTokenizerJson(dir / "tokenizer.json");
        ADD_FAILURE() << "nested Sequences were accepted";
      } catch (const FormatError& e) {
        EXPECT_THAT(e.what(), HasSubstr(error));
      }
    }
  }
}

TEST(LoadTokenizer, PicksTheImplementationFromThePath) {
  ScratchDir dir;
  testing::WriteFile(dir / "tokenizer.json", MakeTokenizer({}, json::array()).dump());
  auto from_dir = LoadTokenizer(dir.path().string());
  EXPECT_EQ(from_dir->vocab_size(), 256u);
  EXPECT_THAT(from_dir->Describe(), HasSubstr("byte-level BPE"));
  EXPECT_THROW(LoadTokenizer(dir / "missing.json"), std::runtime_error);
  ScratchDir empty;
  try {
    LoadTokenizer(empty.path().string());
    FAIL() << "a directory without a tokenizer was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("neither tokenizer.json nor tokenizer.model"));
  }
}

}  // namespace
}  // namespace diablo::model
