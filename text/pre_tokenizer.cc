// The split regexes of byte-level BPE tokenizers, evaluated by hand.  Each
// Match* function answers what the regex engine would match at one position:
// alternatives are tried left to right and the first that matches wins
// (leftmost-first, not longest), with the backtracking of `\s+(?!\S)` and
// `\s*[\r\n]+` worked out in closed form.
#include "text/pre_tokenizer.h"

#include <span>

#include "text/unicode_classes.h"

namespace diablo::model {
namespace {

using Units = std::span<const TextUnit>;

bool IsLetter(const TextUnit& u) { return u.cls == CharClass::kLetter; }
bool IsNumber(const TextUnit& u) { return u.cls == CharClass::kNumber; }
bool IsSpace(const TextUnit& u) { return u.cls == CharClass::kWhitespace; }
bool IsOther(const TextUnit& u) { return u.cls == CharClass::kOther; }
bool IsNewline(const TextUnit& u) { return u.code_point == '\r' || u.code_point == '\n'; }
bool Is(const TextUnit& u, char c) { return u.code_point == static_cast<uint32_t>(c); }

// Case-insensitive ASCII letter test as the (?i) flag of Oniguruma applies
// it: 's' also matches U+017F LATIN SMALL LETTER LONG S, whose case fold is s.
bool IsLetterFold(const TextUnit& u, char lower, bool fold) {
  if (Is(u, lower)) return true;
  if (!fold) return false;
  if (u.code_point == static_cast<uint32_t>(lower - 'a' + 'A')) return true;
  return lower == 's' && u.code_point == 0x17F;
}

// 's|'t|'re|'ve|'m|'ll|'d at i; returns the end or 0.
size_t MatchContraction(Units u, size_t i, bool fold) {
  if (!Is(u[i], '\'') || i + 1 >= u.size()) return 0;
  const TextUnit& a = u[i + 1];
  for (char c : {'s', 't', 'm', 'd'}) {
    if (IsLetterFold(a, c, fold)) return i + 2;
  }
  if (i + 2 >= u.size()) return 0;
  const TextUnit& b = u[i + 2];
  if (IsLetterFold(a, 'r', fold) && IsLetterFold(b, 'e', fold)) return i + 3;
  if (IsLetterFold(a, 'v', fold) && IsLetterFold(b, 'e', fold)) return i + 3;
  if (IsLetterFold(a, 'l', fold) && IsLetterFold(b, 'l', fold)) return i + 3;
  return 0;
}

template <typename Pred>
size_t RunEnd(Units u, size_t i, Pred pred) {
  while (i < u.size() && pred(u[i])) ++i;
  return i;
}

// ` ?X+` for a class predicate X; returns the end or 0.
template <typename Pred>
size_t MatchOptionalSpaceRun(Units u, size_t i, Pred pred) {
  size_t j = i;
  if (Is(u[j], ' ') && j + 1 < u.size() && pred(u[j + 1])) ++j;
  if (!pred(u[j])) return 0;
  return RunEnd(u, j, pred);
}

// `\s+(?!\S)|\s+` at a whitespace unit i: the whole run when it ends the
// text, otherwise all of it but the last unit (which then leads the next
// word), unless the run is a single unit.
size_t MatchTrailingSpace(Units u, size_t i) {
  const size_t end = RunEnd(u, i, IsSpace);
  if (end == u.size() || end - i < 2) return end;
  return end - 1;
}

size_t NextGpt2(Units u, size_t i) {
  if (size_t e = MatchContraction(u, i, /*fold=*/false)) return e;
  if (size_t e = MatchOptionalSpaceRun(u, i, IsLetter)) return e;
  if (size_t e = MatchOptionalSpaceRun(u, i, IsNumber)) return e;
  if (size_t e = MatchOptionalSpaceRun(u, i, IsOther)) return e;
  return MatchTrailingSpace(u, i);  // only whitespace is left at i
}

size_t NextLlama3(Units u, size_t i, int max_digits) {
  if (size_t e = MatchContraction(u, i, /*fold=*/true)) return e;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (IsLetter(u[i])) return RunEnd(u, i, IsLetter);
  if (!IsNewline(u[i]) && !IsNumber(u[i]) && i + 1 < u.size() && IsLetter(u[i + 1])) {
    return RunEnd(u, i + 1, IsLetter);
  }
  // \p{N}{1,K}
  if (IsNumber(u[i])) {
    size_t j = i;
    while (j < u.size() && j - i < static_cast<size_t>(max_digits) && IsNumber(u[j])) ++j;
    return j;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  if (size_t e = MatchOptionalSpaceRun(u, i, IsOther)) return RunEnd(u, e, IsNewline);
  // Only whitespace is left.  \s*[\r\n]+ ends after the last newline of the run.
  const size_t end = RunEnd(u, i, IsSpace);
  for (size_t j = end; j > i; --j) {
    if (IsNewline(u[j - 1])) return j;
  }
  return MatchTrailingSpace(u, i);
}

void SplitByRegex(Units u, const PreTokenizerConfig& config, std::vector<TextPiece>* out) {
  if (u.empty()) return;
  const auto bytes = [&](size_t a, size_t b) {
    return TextPiece{u[a].begin, u[b - 1].begin + u[b - 1].size};
  };
  if (config.regex == SplitRegex::kNone) {
    out->push_back(bytes(0, u.size()));
    return;
  }
  size_t i = 0;
  while (i < u.size()) {
    const size_t e =
        config.regex == SplitRegex::kGpt2 ? NextGpt2(u, i) : NextLlama3(u, i, config.max_digits);
    out->push_back(bytes(i, e));
    i = e;
  }
}

}  // namespace

std::string PreTokenizerConfig::Describe() const {
  std::string s;
  if (isolate_digits) s = individual_digits ? "single digits, then " : "digit runs, then ";
  switch (regex) {
    case SplitRegex::kNone:
      s += "no regex";
      break;
    case SplitRegex::kGpt2:
      s += "GPT-2 regex";
      break;
    case SplitRegex::kLlama3:
      s += "Llama-3 regex (numbers of up to " + std::to_string(max_digits) + " digits)";
      break;
  }
  if (add_prefix_space) s += ", prefix space";
  return s;
}

std::vector<TextPiece> PreTokenize(std::string_view text, const PreTokenizerConfig& config) {
  const std::vector<TextUnit> all = DecodeUtf8(text);
  const Units units(all);
  std::vector<TextPiece> pieces;
  if (!config.isolate_digits) {
    SplitByRegex(units, config, &pieces);
    return pieces;
  }
  // Numbers are cut out first; the regex then sees only the text between.
  size_t start = 0, i = 0;
  while (i < units.size()) {
    if (!IsNumber(units[i])) {
      ++i;
      continue;
    }
    SplitByRegex(units.subspan(start, i - start), config, &pieces);
    const size_t end = config.individual_digits ? i + 1 : RunEnd(units, i, IsNumber);
    pieces.push_back({units[i].begin, units[end - 1].begin + units[end - 1].size});
    start = i = end;
  }
  SplitByRegex(units.subspan(start), config, &pieces);
  return pieces;
}

}  // namespace diablo::model
