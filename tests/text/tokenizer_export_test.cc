// Exported tokenizer files, without Python: every pre-tokenizer style our
// reader knows survives export and reading back unchanged (vocabulary,
// merges, added tokens, splitting, normaliser, BOS/EOS), and vocabularies
// that cannot be exported are refused with a message naming the problem.
#include "text/tokenizer_export.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/text/test_util.h"
#include "text/unicode_classes.h"

namespace diablo::model {
namespace {

using nlohmann::json;
using testing::ScratchDir;

// 256 byte tokens, two merges, a special and a plain added token.
BpeSpec SmallSpec() {
  BpeSpec spec;
  spec.source = "small";
  for (int b = 0; b < 256; ++b) {
    std::string s;
    AppendUtf8(ByteToChar(static_cast<uint8_t>(b)), &s);
    spec.vocab.push_back(s);
  }
  spec.vocab.push_back("Ġt");             // 256
  spec.vocab.push_back("he");             // 257
  spec.vocab.push_back("<|endoftext|>");  // 258
  spec.vocab.push_back("<custom>");       // 259
  spec.merges = {{"Ġ", "t"}, {"h", "e"}};
  spec.added = {{.content = "<|endoftext|>", .id = 258, .special = true},
                {.content = "<custom>", .id = 259, .special = false}};
  spec.special_ids.eos = 258;
  spec.special_ids.unk = 258;
  return spec;
}

void WriteFiles(const ScratchDir& dir, const HfTokenizerFiles& files) {
  for (const auto& [name, contents] : files) testing::WriteFile(dir / name, contents);
}

struct Style {
  const char* name;
  void (*apply)(BpeSpec&);
};

const Style kStyles[] = {
    {"gpt2", [](BpeSpec&) {}},
    {"gpt2_prefix_space", [](BpeSpec& s) { s.pre.add_prefix_space = true; }},
    {"smollm_digits", [](BpeSpec& s) { s.pre.isolate_digits = true; }},
    {"llama3_bos",
     [](BpeSpec& s) {
       s.pre.regex = SplitRegex::kLlama3;
       s.pre.max_digits = 3;
       s.ignore_merges = true;
       s.special_ids.bos = 258;
       s.prefix_ids = {258};
     }},
    {"qwen2_nfc",
     [](BpeSpec& s) {
       s.pre.regex = SplitRegex::kLlama3;
       s.pre.max_digits = 1;
       s.nfc = true;
     }},
    {"bos_and_eos",
     [](BpeSpec& s) {
       s.special_ids.bos = 258;
       s.prefix_ids = {258};
       s.suffix_ids = {258};
     }},
};

// Shown in test names instead of the struct's bytes.
void PrintTo(const Style& s, std::ostream* os) { *os << s.name; }

class ExportStyle : public ::testing::TestWithParam<Style> {};

TEST_P(ExportStyle, ReadsBackAsTheSameTokenizer) {
  BpeSpec spec = SmallSpec();
  GetParam().apply(spec);
  ScratchDir dir;
  WriteFiles(dir, ExportHfTokenizer(spec, {.chat_template = "{{ messages }}"}));
  const BpeSpec back = ReadTokenizerJsonSpec(dir / "tokenizer.json");
  EXPECT_EQ(back.vocab, spec.vocab);
  EXPECT_EQ(back.merges, spec.merges);
  ASSERT_EQ(back.added.size(), spec.added.size());
  for (size_t i = 0; i < spec.added.size(); ++i) {
    EXPECT_EQ(back.added[i].content, spec.added[i].content);
    EXPECT_EQ(back.added[i].id, spec.added[i].id);
    EXPECT_EQ(back.added[i].special, spec.added[i].special);
  }
  EXPECT_EQ(back.pre.regex, spec.pre.regex);
  if (spec.pre.regex == SplitRegex::kLlama3) {
    EXPECT_EQ(back.pre.max_digits, spec.pre.max_digits);
  }
  EXPECT_EQ(back.pre.isolate_digits, spec.pre.isolate_digits);
  if (spec.pre.isolate_digits) {
    EXPECT_EQ(back.pre.individual_digits, spec.pre.individual_digits);
  }
  EXPECT_EQ(back.pre.add_prefix_space, spec.pre.add_prefix_space);
  EXPECT_EQ(back.nfc, spec.nfc);
  EXPECT_EQ(back.ignore_merges, spec.ignore_merges);
  EXPECT_EQ(back.prefix_ids, spec.prefix_ids);
  EXPECT_EQ(back.suffix_ids, spec.suffix_ids);
  // Special ids come back through tokenizer_config.json.
  EXPECT_EQ(back.special_ids.bos, spec.special_ids.bos);
  EXPECT_EQ(back.special_ids.eos, spec.special_ids.eos);
  EXPECT_EQ(back.special_ids.unk, spec.special_ids.unk);

  const json config = testing::ReadJson(dir / "tokenizer_config.json");
  EXPECT_EQ(config["tokenizer_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(config["chat_template"], "{{ messages }}");
  EXPECT_EQ(config["eos_token"], "<|endoftext|>");
  EXPECT_EQ(testing::ReadJson(dir / "special_tokens_map.json")["eos_token"], "<|endoftext|>");
}

INSTANTIATE_TEST_SUITE_P(Styles, ExportStyle, ::testing::ValuesIn(kStyles),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(TokenizerExport, ASpecialTokenThatIsOnlyAVocabularyEntryBecomesAnAddedToken) {
  // Otherwise transformers would append "he" to the vocabulary under a new id.
  BpeSpec spec = SmallSpec();
  spec.special_ids.pad = 257;
  const json tokenizer = json::parse(TokenizerJson(spec));
  bool found = false;
  for (const json& t : tokenizer["added_tokens"]) {
    if (t["id"] == 257) found = t["content"] == "he" && t["special"] == true;
  }
  EXPECT_TRUE(found) << tokenizer["added_tokens"].dump();
}

TEST(TokenizerExport, RefusesTwoIdsWithTheSameSpelling) {
  BpeSpec spec = SmallSpec();
  spec.vocab[257] = "Ġt";
  try {
    TokenizerJson(spec);
    FAIL() << "expected a FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("256 and 257"), std::string::npos) << e.what();
  }
}

// A GGUF header with string metadata only.
std::vector<uint8_t> GgufWithStrings(const std::vector<std::pair<std::string, std::string>>& kv) {
  std::vector<uint8_t> bytes;
  auto put = [&](const void* p, size_t n) {
    bytes.insert(bytes.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
  };
  auto put_u32 = [&](uint32_t v) { put(&v, 4); };
  auto put_u64 = [&](uint64_t v) { put(&v, 8); };
  auto put_str = [&](const std::string& s) {
    put_u64(s.size());
    put(s.data(), s.size());
  };
  put_u32(0x46554747);  // "GGUF"
  put_u32(3);
  put_u64(0);  // tensors
  put_u64(kv.size());
  for (const auto& [key, value] : kv) {
    put_str(key);
    put_u32(8);  // string
    put_str(value);
  }
  bytes.resize((bytes.size() + 31) / 32 * 32, 0);  // the (empty) data section is aligned
  return bytes;
}

TEST(TokenizerExport, SentencePieceGgufVocabularyIsRefusedWithAHint) {
  const std::vector<uint8_t> bytes =
      GgufWithStrings({{"general.architecture", "llama"}, {"tokenizer.ggml.model", "llama"}});
  const GgufFile file = GgufFile::Parse(bytes, "sp.gguf");
  try {
    ExportGgufTokenizer(file, "sp.gguf");
    FAIL() << "expected a FormatError";
  } catch (const FormatError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("sp.gguf"), std::string::npos) << message;
    EXPECT_NE(message.find("\"llama\""), std::string::npos) << message;
    EXPECT_NE(message.find("Hugging Face directory"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace diablo::model
