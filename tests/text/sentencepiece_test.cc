// The SentencePiece tokenizer.model path.  With the library, a small model is
// trained here by libsentencepiece's own trainer (no download, no Python
// package needed) and read back through LoadTokenizer; without it, the
// factory must say that this build lacks SentencePiece.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "tests/text/test_util.h"
#include "text/tokenizer.h"
#ifdef DIABLO_WITH_SENTENCEPIECE
#include <sentencepiece_trainer.h>
#endif

namespace diablo::model {
namespace {

using ::testing::HasSubstr;

#ifdef DIABLO_WITH_SENTENCEPIECE
// Trains a 400-piece BPE model on a small corpus; returns the .model path.
std::string TrainModel(const testing::ScratchDir& dir) {
  std::string corpus;
  const char* lines[] = {
      "The quick brown fox jumps over the lazy dog.",
      "A journey of a thousand miles begins with a single step.",
      "To be or not to be, that is the question.",
      "Café au lait and crème brûlée are French words.",
      "Numbers like 12, 345 and 6789 appear in text too.",
      "Sentence piece models treat the input as a raw stream of characters.",
  };
  for (int repeat = 0; repeat < 40; ++repeat) {
    for (const char* line : lines) corpus += std::string(line) + "\n";
  }
  testing::WriteFile(dir / "corpus.txt", corpus);
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + (dir / "corpus.txt") + " --model_prefix=" + (dir / "tokenizer") +
      " --vocab_size=400 --model_type=bpe --character_coverage=1.0 --byte_fallback=true"
      " --minloglevel=2");
  EXPECT_TRUE(status.ok()) << status.ToString();
  return dir / "tokenizer.model";
}

TEST(SentencePiece, EncodesWithBosAndDecodesBack) {
  testing::ScratchDir dir;
  const auto tokenizer = LoadTokenizer(TrainModel(dir));
  EXPECT_EQ(tokenizer->vocab_size(), 400u);
  ASSERT_TRUE(tokenizer->bos_id());
  ASSERT_TRUE(tokenizer->eos_id());
  const std::string text = "The quick brown fox, 42 times: naïve café! 東";
  const auto ids = tokenizer->Encode(text);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), *tokenizer->bos_id());
  EXPECT_EQ(tokenizer->Encode(text, false).size(), ids.size() - 1);
  EXPECT_EQ(tokenizer->Decode(ids, /*skip_special=*/true), text);  // byte fallback covers 東
  EXPECT_EQ(tokenizer->IdToToken(*tokenizer->bos_id()), "<s>");
  EXPECT_EQ(tokenizer->TokenToId("<s>"), tokenizer->bos_id());
  EXPECT_FALSE(tokenizer->TokenToId("no such piece"));
  EXPECT_TRUE(tokenizer->IsSpecial(*tokenizer->eos_id()));
}

TEST(SentencePiece, ControlPiecesInTextAreRecognisedUnlessParseSpecialIsOff) {
  testing::ScratchDir dir;
  const auto tokenizer = LoadTokenizer(TrainModel(dir));
  const int32_t bos = *tokenizer->bos_id(), eos = *tokenizer->eos_id();
  const auto ids = tokenizer->Encode("<s>[INST] hi [/INST] ok </s>", false);
  EXPECT_EQ(ids.front(), bos);
  EXPECT_EQ(ids.back(), eos);
  const auto literal =
      tokenizer->Encode("<s>hi</s>", {.add_special = false, .parse_special = false});
  EXPECT_EQ(std::count(literal.begin(), literal.end(), bos), 0);
  EXPECT_EQ(tokenizer->Decode(ids), "<s>[INST] hi [/INST] ok</s>");
  // Offsets point back into the text.
  const std::string text = "hello world";
  const Encoding e = tokenizer->EncodeWithOffsets(text, {.add_special = false});
  ASSERT_FALSE(e.offsets.empty());
  EXPECT_EQ(e.offsets.back().second, text.size());
}

TEST(SentencePiece, TokenizerConfigCanTurnBosOff) {
  testing::ScratchDir dir;
  const std::string model = TrainModel(dir);
  testing::WriteFile(dir / "tokenizer_config.json",
                     R"({"add_bos_token": false, "add_eos_token": true})");
  const auto tokenizer = LoadTokenizer(dir.path().string());
  const auto ids = tokenizer->Encode("hello");
  EXPECT_NE(ids.front(), *tokenizer->bos_id());
  EXPECT_EQ(ids.back(), *tokenizer->eos_id());
}

TEST(SentencePiece, NotAModelFileIsAFormatError) {
  testing::ScratchDir dir;
  testing::WriteFile(dir / "tokenizer.model", "this is not a protobuf");
  try {
    LoadTokenizer(dir / "tokenizer.model");
    FAIL() << "garbage was accepted as a SentencePiece model";
  } catch (const FormatError& e) {
    EXPECT_THAT(e.what(), HasSubstr("tokenizer.model"));
  }
}
#else
TEST(SentencePiece, BuildWithoutTheLibrarySaysSo) {
  testing::ScratchDir dir;
  testing::WriteFile(dir / "tokenizer.model", "x");
  EXPECT_FALSE(HaveSentencePiece());
  try {
    LoadTokenizer(dir / "tokenizer.model");
    FAIL() << "a tokenizer.model was accepted without SentencePiece support";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("this build has no SentencePiece support"));
  }
}
#endif

}  // namespace
}  // namespace diablo::model
