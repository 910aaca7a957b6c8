// Unit tests of the hand-written split regexes and the Unicode helpers they
// rest on.  Expectations follow the regex semantics (leftmost alternative
// wins); hf_reference_test.cc checks the same code against Hugging Face.
#include "text/pre_tokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "text/unicode_classes.h"

namespace diablo::model {
namespace {

using Pieces = std::vector<std::string>;

Pieces Split(const std::string& text, const PreTokenizerConfig& config) {
  Pieces out;
  size_t expected_begin = 0;
  for (const auto& [b, e] : PreTokenize(text, config)) {
    EXPECT_EQ(b, expected_begin) << "pieces must cover the text in order";
    EXPECT_LT(b, e) << "no empty pieces";
    out.push_back(text.substr(b, e - b));
    expected_begin = e;
  }
  EXPECT_EQ(expected_begin, text.size()) << "pieces must cover the whole text";
  return out;
}

PreTokenizerConfig Gpt2() { return {}; }
PreTokenizerConfig Llama3(int digits = 3) {
  PreTokenizerConfig c;
  c.regex = SplitRegex::kLlama3;
  c.max_digits = digits;
  return c;
}
PreTokenizerConfig SmolLM() {
  PreTokenizerConfig c;
  c.isolate_digits = true;
  return c;
}

TEST(Gpt2Split, WordsKeepTheirLeadingSpace) {
  EXPECT_EQ(Split("Hello world", Gpt2()), (Pieces{"Hello", " world"}));
  EXPECT_EQ(Split("$%& ok 123 4567", Gpt2()), (Pieces{"$%&", " ok", " 123", " 4567"}));
}

TEST(Gpt2Split, ContractionsAreCaseSensitive) {
  EXPECT_EQ(Split("I'm here's don't", Gpt2()), (Pieces{"I", "'m", " here", "'s", " don", "'t"}));
  EXPECT_EQ(Split("DON'T", Gpt2()), (Pieces{"DON", "'", "T"}));
  EXPECT_EQ(Split("we've they'll he'd 'start", Gpt2()),
            (Pieces{"we", "'ve", " they", "'ll", " he", "'d", " '", "start"}));
}

TEST(Gpt2Split, WhitespaceRunLeavesItsLastCharacterToTheNextWord) {
  EXPECT_EQ(Split("a  b", Gpt2()), (Pieces{"a", " ", " b"}));
  EXPECT_EQ(Split("a\n\nb", Gpt2()), (Pieces{"a", "\n", "\n", "b"}));
  EXPECT_EQ(Split("x   ", Gpt2()), (Pieces{"x", "   "}));
  EXPECT_EQ(Split("a \t\tb", Gpt2()), (Pieces{"a", " \t", "\t", "b"}));
}

TEST(Gpt2Split, UnicodeClasses) {
  // CJK and accented letters are letters; Arabic-Indic digits are numbers;
  // a combining mark is neither, so it splits from its base letter.
  EXPECT_EQ(Split("東京 café ٣٤", Gpt2()), (Pieces{"東京", " café", " ٣٤"}));
  EXPECT_EQ(Split("e\xCC\x81x", Gpt2()), (Pieces{"e", "\xCC\x81", "x"}));
  EXPECT_EQ(Split("a\xC2\xA0"
                  "b",
                  Gpt2()),
            (Pieces{"a", "\xC2\xA0", "b"}));  // NBSP is \s
}

TEST(Gpt2Split, InvalidUtf8BytesAreCarriedAlong) {
  EXPECT_EQ(Split("a\xFF\xFE b", Gpt2()), (Pieces{"a", "\xFF\xFE", " b"}));
}

TEST(Llama3Split, NumbersInGroupsOfUpToThreeDigits) {
  EXPECT_EQ(Split("12345 x1234567", Llama3()), (Pieces{"123", "45", " x", "123", "456", "7"}));
  EXPECT_EQ(Split("2024", Llama3(1)), (Pieces{"2", "0", "2", "4"}));
}

TEST(Llama3Split, ContractionsIgnoreCase) {
  EXPECT_EQ(Split("DON'T I'M", Llama3()), (Pieces{"DON", "'T", " I", "'M"}));
}

TEST(Llama3Split, OnePrefixCharacterJoinsALetterRun) {
  EXPECT_EQ(Split("\tfoo (bar", Llama3()), (Pieces{"\tfoo", " (", "bar"}));
  EXPECT_EQ(Split("x+y", Llama3()), (Pieces{"x", "+y"}));
  EXPECT_EQ(Split("\nfoo", Llama3()), (Pieces{"\n", "foo"}));  // but never a newline
}

TEST(Llama3Split, PunctuationTakesTheNewlinesAfterIt) {
  EXPECT_EQ(Split("hello!!\n\nworld", Llama3()), (Pieces{"hello", "!!\n\n", "world"}));
}

TEST(Llama3Split, WhitespaceUpToTheLastNewlineIsOnePiece) {
  EXPECT_EQ(Split("a\n\n b", Llama3()), (Pieces{"a", "\n\n", " b"}));
  EXPECT_EQ(Split("x  \n  y", Llama3()), (Pieces{"x", "  \n", " ", " y"}));
  EXPECT_EQ(Split("end \n\n", Llama3()), (Pieces{"end", " \n\n"}));
}

TEST(SmolLMSplit, DigitsAreIsolatedBeforeTheGpt2Split) {
  EXPECT_EQ(Split("x1234y", SmolLM()), (Pieces{"x", "1", "2", "3", "4", "y"}));
  EXPECT_EQ(Split("abc 123", SmolLM()), (Pieces{"abc", " ", "1", "2", "3"}));
  // The space before a number no longer leads it, so it ends the whitespace run.
  EXPECT_EQ(Split("a\n\n 12", SmolLM()), (Pieces{"a", "\n\n ", "1", "2"}));
  EXPECT_EQ(Split("²①", SmolLM()), (Pieces{"²", "①"}));  // any \p{N}, not just 0-9
}

TEST(SmolLMSplit, DigitRunsStayTogetherWithoutIndividualDigits) {
  PreTokenizerConfig c = SmolLM();
  c.individual_digits = false;
  EXPECT_EQ(Split("ab123cd", c), (Pieces{"ab", "123", "cd"}));
}

TEST(UnicodeClasses, GeneratedTablesClassifyKnownCharacters) {
  EXPECT_EQ(ClassOf('A'), CharClass::kLetter);
  EXPECT_EQ(ClassOf(0x4E2D), CharClass::kLetter);      // 中
  EXPECT_EQ(ClassOf(0x0663), CharClass::kNumber);      // Arabic-Indic three
  EXPECT_EQ(ClassOf(0x2167), CharClass::kNumber);      // Roman numeral eight (Nl)
  EXPECT_EQ(ClassOf(0x3000), CharClass::kWhitespace);  // ideographic space
  EXPECT_EQ(ClassOf(0x85), CharClass::kWhitespace);    // NEL
  EXPECT_EQ(ClassOf(0x1C), CharClass::kOther);
  EXPECT_EQ(ClassOf(0x0301), CharClass::kOther);   // combining acute (Mn)
  EXPECT_EQ(ClassOf(0x1F600), CharClass::kOther);  // emoji (So)
  EXPECT_EQ(ClassOf(0x110000), CharClass::kOther);
}

TEST(Utf8, SanitizeReplacesEachMaximalBadSubsequenceOnce) {
  EXPECT_EQ(SanitizeUtf8("ok \xE2\x82\xAC"), "ok \xE2\x82\xAC");  // € untouched
  EXPECT_EQ(SanitizeUtf8("a\xE2\x82"
                         "b"),
            "a\xEF\xBF\xBD"
            "b");                                                   // truncated: one
  EXPECT_EQ(SanitizeUtf8("\xE0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong: two
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(SanitizeUtf8("\xF0\x9F\x98"), "\xEF\xBF\xBD");                          // cut emoji
}

}  // namespace
}  // namespace diablo::model
