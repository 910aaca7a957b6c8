// libFuzzer target for the tokenizer.json reader (text/tokenizer_json.cc)
// and the byte-level BPE tokenizer it builds (LoadTokenizerJson, in two
// steps).  FormatError is the answer to a file it refuses; any other
// exception, a crash or a sanitizer report is a bug.  For a file it accepts,
// fixed texts must encode to ids inside the vocabulary with offsets inside
// the text, and decode without error; where the encoding is plain byte-level
// BPE (no normaliser, no added token among the ids, every byte of the text in
// the vocabulary) decoding must give the text back exactly and the offsets
// must tile it.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>

#include "text/bpe_tokenizer.h"
#include "text/unicode_classes.h"

namespace {

namespace fs = std::filesystem;
using diablo::model::BpeSpec;
using diablo::model::BpeTokenizer;
using diablo::model::EncodeOptions;
using diablo::model::Encoding;

// Valid UTF-8 (Decode turns broken bytes into U+FFFD, so only such text can
// round-trip): words, contractions, digits, combining marks, CJK, emoji,
// whitespace runs, and the spellings of typical added tokens.
constexpr std::string_view kTexts[] = {
    "Hello world, it's 2024! The cafe\u0301 costs 12.50\u20ac; \u6771\u4eac "
    "\U0001F44D\U0001F3FD\n\n\tx  y   \r\n",
    "<|im_start|>user\nHi [SEP] there<|im_end|>\n<|endoftext|> <s>the thing</s> ",
};

// A scratch folder of its own: the reader also looks for a
// tokenizer_config.json beside the file, and there is none here.
// (Leaked: the exit handler that removes it is registered first, so it runs
// after this static would have been destroyed.)
const fs::path& ScratchDir() {
  static const fs::path* dir = [] {
    auto* d = new fs::path(fs::temp_directory_path() /
                           ("diablo-tokenizer-fuzz-" + std::to_string(::getpid())));
    fs::create_directories(*d);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(ScratchDir(), ec);
    });
    return d;
  }();
  return *dir;
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

// What the spec says about when decoding must give the text back.
struct RoundTrip {
  bool possible = false;  // no normaliser
  bool prefix_space = false;
  bool byte_token[256] = {};  // the byte's one-character spelling is in the vocabulary
  std::unordered_set<int32_t> added_ids;
};

RoundTrip RoundTripOf(const BpeSpec& spec) {
  RoundTrip r;
  r.possible = !spec.nfc;
  r.prefix_space = spec.pre.add_prefix_space;
  std::unordered_set<std::string_view> short_tokens;  // the byte spellings are 1 or 2 bytes
  for (const std::string& token : spec.vocab) {
    if (!token.empty() && token.size() <= 2) short_tokens.insert(token);
  }
  for (int b = 0; b < 256; ++b) {
    std::string spelling;
    diablo::model::AppendUtf8(diablo::model::ByteToChar(static_cast<uint8_t>(b)), &spelling);
    r.byte_token[b] = short_tokens.count(spelling) > 0;
  }
  for (const auto& t : spec.added) r.added_ids.insert(t.id);
  return r;
}

void CheckEncoding(const BpeTokenizer& tokenizer, const RoundTrip& r, std::string_view text,
                   const EncodeOptions& options) {
  const Encoding enc = tokenizer.EncodeWithOffsets(text, options);
  Check(enc.ids.size() == enc.offsets.size());
  bool has_added = false;
  for (size_t i = 0; i < enc.ids.size(); ++i) {
    const int32_t id = enc.ids[i];
    Check(id >= 0 && static_cast<size_t>(id) < tokenizer.vocab_size());
    const auto [begin, end] = enc.offsets[i];
    Check(begin <= end && end <= text.size());
    (void)tokenizer.IdToToken(id);  // throws only for ids outside the vocabulary
    has_added |= r.added_ids.count(id) > 0;
  }
  const std::string decoded = tokenizer.Decode(enc.ids);
  (void)tokenizer.Decode(enc.ids, /*skip_special=*/true);
  if (options.add_special || !r.possible || has_added) return;
  for (char c : text) {
    if (!r.byte_token[static_cast<uint8_t>(c)]) return;  // dropped, or unk
  }
  // Only byte tokens and merges of them: the bytes come back, after the
  // virtual space add_prefix_space puts in front.
  const bool spaced = r.prefix_space && !text.empty() && text[0] != ' ';
  Check(decoded == (spaced ? " " : "") + std::string(text));
  size_t at = 0;
  for (const auto& [begin, end] : enc.offsets) {
    Check(begin == at);
    at = end;
  }
  Check(at == text.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = (ScratchDir() / "tokenizer.json").string();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) abort();
  }
  BpeSpec spec;
  try {
    spec = diablo::model::ReadTokenizerJsonSpec(path);
  } catch (const diablo::model::FormatError&) {
    return 0;
  }
  const RoundTrip round_trip = RoundTripOf(spec);
  std::unique_ptr<BpeTokenizer> tokenizer;
  try {
    tokenizer = std::make_unique<BpeTokenizer>(std::move(spec));
  } catch (const diablo::model::FormatError&) {
    return 0;
  }
  for (std::string_view text : kTexts) {
    CheckEncoding(*tokenizer, round_trip, text, {});
    CheckEncoding(*tokenizer, round_trip, text, {.add_special = false, .parse_special = false});
    CheckEncoding(*tokenizer, round_trip, text, {.add_special = false, .parse_special = true});
  }
  // Special ids the spec named must be inside the vocabulary too.
  for (auto id : {tokenizer->bos_id(), tokenizer->eos_id(), tokenizer->special_ids().unk,
                  tokenizer->special_ids().pad}) {
    if (id) Check(*id >= 0 && static_cast<size_t>(*id) < tokenizer->vocab_size());
  }
  (void)tokenizer->Describe();
  return 0;
}
