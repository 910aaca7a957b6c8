// Byte-level BPE encoding and decoding.  Merging follows Hugging Face's order
// exactly: always the adjacent pair of lowest rank, the leftmost one on ties,
// found with a priority queue whose stale entries are skipped when popped.
#include "text/bpe_tokenizer.h"

#include <algorithm>
#include <queue>
#include <stdexcept>
#include <tuple>

#include "text/normalizer.h"
#include "text/unicode_classes.h"

namespace diablo::model {
namespace {

// Words longer than this are not cached (they are rare and would crowd out
// the common ones); the cache is emptied when it grows past kMaxCacheEntries.
constexpr size_t kMaxCachedWordBytes = 64;
constexpr size_t kMaxCacheEntries = 1 << 17;

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

std::string ByteLevelSpelling(std::string_view bytes) {
  std::string out;
  for (char c : bytes) AppendUtf8(ByteToChar(static_cast<uint8_t>(c)), &out);
  return out;
}

// Inverse of ByteToChar over a whole token; false when some character is not
// the image of a byte (then the caller keeps the token's own bytes, as
// Hugging Face's ByteLevel decoder does).
bool ByteLevelToBytes(std::string_view token, std::string* out) {
  static const std::vector<int> kCharToByte = [] {
    std::vector<int> table(0x144, -1);
    for (int b = 0; b < 256; ++b) table[ByteToChar(static_cast<uint8_t>(b))] = b;
    return table;
  }();
  std::string bytes;
  for (const TextUnit& u : DecodeUtf8(token)) {
    if (u.code_point >= kCharToByte.size() || kCharToByte[u.code_point] < 0) return false;
    bytes.push_back(static_cast<char>(kCharToByte[u.code_point]));
  }
  *out += bytes;
  return true;
}

bool IsWordUnit(const TextUnit& u) {
  return u.cls == CharClass::kLetter || u.cls == CharClass::kNumber || u.code_point == '_';
}

}  // namespace

uint32_t ByteToChar(uint8_t byte) {
  static const std::vector<uint32_t> kTable = [] {
    std::vector<uint32_t> table(256);
    uint32_t next_hidden = 0x100;  // the non-printable bytes take U+0100, U+0101, ...
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      table[b] = printable ? b : next_hidden++;
    }
    return table;
  }();
  return kTable[byte];
}

BpeTokenizer::BpeTokenizer(BpeSpec spec) : spec_(std::move(spec)) {
  const int32_t n = static_cast<int32_t>(spec_.vocab.size());
  token_to_id_.reserve(spec_.vocab.size() + spec_.added.size());
  token_bytes_.resize(spec_.vocab.size());
  for (int32_t id = 0; id < n; ++id) {
    if (!spec_.vocab[id].empty()) token_to_id_.emplace(spec_.vocab[id], id);
    if (!ByteLevelToBytes(spec_.vocab[id], &token_bytes_[id])) token_bytes_[id] = spec_.vocab[id];
  }
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    AppendUtf8(ByteToChar(static_cast<uint8_t>(b)), &ch);
    auto it = token_to_id_.find(ch);
    byte_token_[b] = it == token_to_id_.end() ? -1 : it->second;
  }
  merges_.reserve(spec_.merges.size());
  for (size_t rank = 0; rank < spec_.merges.size(); ++rank) {
    const auto& [left, right] = spec_.merges[rank];
    auto l = token_to_id_.find(left), r = token_to_id_.find(right);
    auto m = token_to_id_.find(left + right);
    if (l == token_to_id_.end() || r == token_to_id_.end() || m == token_to_id_.end()) {
      throw FormatError(spec_.source + ": merge #" + std::to_string(rank) + " \"" + left + " " +
                        right +
                        "\" uses or makes a token missing from the vocabulary; the "
                        "tokenizer file is inconsistent (re-export it)");
    }
    // The first occurrence of a pair keeps its rank, as in Hugging Face.
    merges_.emplace(PairKey(l->second, r->second),
                    MergeResult{static_cast<int32_t>(rank), m->second});
  }
  added_by_first_byte_.resize(256);
  for (size_t i = 0; i < spec_.added.size(); ++i) {
    const AddedToken& t = spec_.added[i];
    if (t.content.empty() || t.id < 0 || t.id >= n) {
      throw FormatError(spec_.source + ": added token \"" + t.content + "\" (id " +
                        std::to_string(t.id) + ") is empty or outside the vocabulary of " +
                        std::to_string(n) + " tokens");
    }
    added_by_id_[t.id] = i;
    token_to_id_[t.content] = t.id;
    added_by_first_byte_[static_cast<uint8_t>(t.content[0])].push_back(i);
    if (t.special) special_token_ids_.push_back(t.id);
  }
  for (auto& list : added_by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
      return spec_.added[a].content.size() > spec_.added[b].content.size();
    });
  }
  std::sort(special_token_ids_.begin(), special_token_ids_.end());
  special_token_ids_.erase(std::unique(special_token_ids_.begin(), special_token_ids_.end()),
                           special_token_ids_.end());
  special_ids_ = spec_.special_ids;
  for (auto id : {special_ids_.bos, special_ids_.eos, special_ids_.unk, special_ids_.pad}) {
    if (id && (*id < 0 || *id >= n)) {
      throw FormatError(spec_.source + ": special token id " + std::to_string(*id) +
                        " is outside the vocabulary of " + std::to_string(n) + " tokens");
    }
  }
  for (auto ids : {&spec_.prefix_ids, &spec_.suffix_ids}) {
    for (int32_t id : *ids) {
      if (id < 0 || id >= n) {
        throw FormatError(spec_.source + ": post-processor token id " + std::to_string(id) +
                          " is outside the vocabulary of " + std::to_string(n) + " tokens");
      }
    }
  }
}

std::vector<int32_t> BpeTokenizer::MergeWord(std::string_view word) const {
  if (spec_.ignore_merges) {
    auto it = token_to_id_.find(ByteLevelSpelling(word));
    if (it != token_to_id_.end() && !added_by_id_.count(it->second)) return {it->second};
  }
  // Symbols in a doubly linked list over a vector; a merged-away symbol has
  // id -1.  A byte whose token is missing becomes unk when the model has one
  // and is dropped otherwise (Hugging Face's BPE does the same).
  std::vector<int32_t> id;
  for (char c : word) {
    const int32_t t = byte_token_[static_cast<uint8_t>(c)];
    if (t >= 0) {
      id.push_back(t);
    } else if (special_ids_.unk) {
      id.push_back(*special_ids_.unk);
    }
  }
  const int n = static_cast<int>(id.size());
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  // (rank, position of the left symbol, right symbol's position, left id, right id)
  using Candidate = std::tuple<int32_t, int, int, int32_t, int32_t>;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int left) {
    const int right = left >= 0 ? next[left] : -1;
    if (left < 0 || right < 0) return;
    auto it = merges_.find(PairKey(id[left], id[right]));
    if (it != merges_.end()) queue.emplace(it->second.rank, left, right, id[left], id[right]);
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!queue.empty()) {
    auto [rank, left, right, left_id, right_id] = queue.top();
    queue.pop();
    // Skip entries that earlier merges made stale.
    if (id[left] != left_id || next[left] != right || id[right] != right_id) continue;
    id[left] = merges_.at(PairKey(left_id, right_id)).id;
    id[right] = -1;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    consider(prev[left]);
    consider(left);
  }
  std::vector<int32_t> out;
  for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push_back(id[i]);
  return out;
}

void BpeTokenizer::EncodeWord(std::string_view word, size_t offset, Encoding* out) const {
  std::vector<int32_t> ids;
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(std::string(word));
    if (it != cache_.end()) ids = it->second;
  }
  if (ids.empty()) {
    ids = MergeWord(word);
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      if (cache_.size() >= kMaxCacheEntries) cache_.clear();
      cache_.emplace(std::string(word), ids);
    }
  }
  // Offsets: each token covers the bytes of its spelling, in order.
  size_t pos = offset;
  for (int32_t id : ids) {
    const size_t end = std::min(pos + token_bytes_[id].size(), offset + word.size());
    out->ids.push_back(id);
    out->offsets.emplace_back(pos, end);
    pos = end;
  }
}

void BpeTokenizer::EncodeText(std::string_view text, size_t offset, Encoding* out) const {
  if (text.empty()) return;
  if (spec_.pre.add_prefix_space && text[0] != ' ') {
    // The virtual space joins the first word; that word's first token then
    // starts at the segment's start.
    const std::string spaced = " " + std::string(text);
    const size_t first = out->ids.size();
    for (const auto& [b, e] : PreTokenize(spaced, spec_.pre)) {
      EncodeWord(std::string_view(spaced).substr(b, e - b), offset + b, out);
    }
    for (size_t i = first; i < out->ids.size(); ++i) {
      auto& [b, e] = out->offsets[i];
      b = std::max(b, offset + 1) - 1;
      e = std::max(e, offset + 1) - 1;
    }
    return;
  }
  for (const auto& [b, e] : PreTokenize(text, spec_.pre)) {
    EncodeWord(text.substr(b, e - b), offset + b, out);
  }
}

void BpeTokenizer::EncodeSegment(std::string_view text, size_t offset, Encoding* out) const {
  if (!spec_.nfc) {
    EncodeText(text, offset, out);
    return;
  }
  const NormalizedText normalized = NormalizeNfc(text);
  const size_t first = out->ids.size();
  EncodeText(normalized.text, 0, out);
  for (size_t i = first; i < out->ids.size(); ++i) {
    auto& [b, e] = out->offsets[i];
    if (b < e) {
      // Canonical reordering can move a mark, so take the hull of the sources.
      size_t source_b = normalized.source_begin[b], source_e = normalized.source_end[b];
      for (size_t k = b + 1; k < e; ++k) {
        source_b = std::min<size_t>(source_b, normalized.source_begin[k]);
        source_e = std::max<size_t>(source_e, normalized.source_end[k]);
      }
      b = offset + source_b;
      e = offset + source_e;
    } else {
      b = e =
          offset + (b < normalized.source_begin.size() ? normalized.source_begin[b] : text.size());
    }
  }
}

int BpeTokenizer::FindAddedToken(std::string_view text, size_t from, bool parse_special,
                                 size_t* begin, size_t* end) const {
  if (spec_.added.empty()) return -1;
  for (size_t pos = from; pos < text.size(); ++pos) {
    for (size_t index : added_by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      const AddedToken& t = spec_.added[index];
      if (t.special && !parse_special) continue;
      if (text.compare(pos, t.content.size(), t.content) != 0) continue;
      size_t b = pos, e = pos + t.content.size();
      if (t.single_word) {
        // Only the characters just before and after matter; step back over
        // at most three continuation bytes to find the one before.
        size_t prev = b;
        while (prev > 0 && b - prev < 4) {
          --prev;
          if ((static_cast<uint8_t>(text[prev]) & 0xC0) != 0x80) break;
        }
        const auto before = DecodeUtf8(text.substr(prev, b - prev));
        const auto after = DecodeUtf8(text.substr(e, 4));
        if ((!before.empty() && IsWordUnit(before.back())) ||
            (!after.empty() && IsWordUnit(after.front()))) {
          continue;
        }
      }
      auto is_space = [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
      if (t.lstrip) {
        while (b > from && is_space(text[b - 1])) --b;
      }
      if (t.rstrip) {
        while (e < text.size() && is_space(text[e])) ++e;
      }
      *begin = b;
      *end = e;
      return static_cast<int>(index);  // the list is longest first
    }
  }
  return -1;
}

Encoding BpeTokenizer::EncodeWithOffsets(std::string_view text,
                                         const EncodeOptions& options) const {
  Encoding out;
  if (options.add_special) {
    for (int32_t id : spec_.prefix_ids) {
      out.ids.push_back(id);
      out.offsets.emplace_back(0, 0);
    }
  }
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t b = 0, e = 0;
    const int index = FindAddedToken(text, pos, options.parse_special, &b, &e);
    if (index < 0) {
      EncodeSegment(text.substr(pos), pos, &out);
      break;
    }
    EncodeSegment(text.substr(pos, b - pos), pos, &out);
    out.ids.push_back(spec_.added[index].id);
    out.offsets.emplace_back(b, e);
    pos = e;
  }
  if (options.add_special) {
    for (int32_t id : spec_.suffix_ids) {
      out.ids.push_back(id);
      out.offsets.emplace_back(text.size(), text.size());
    }
  }
  return out;
}

std::string BpeTokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= spec_.vocab.size()) {
      throw std::out_of_range("token id " + std::to_string(id) + " is outside the vocabulary of " +
                              std::to_string(spec_.vocab.size()) + " tokens (" + spec_.source +
                              ")");
    }
    auto added = added_by_id_.find(id);
    if (added != added_by_id_.end()) {
      const AddedToken& t = spec_.added[added->second];
      if (!(skip_special && t.special)) bytes += t.content;
      continue;
    }
    bytes += token_bytes_[id];
  }
  return SanitizeUtf8(bytes);
}

std::optional<int32_t> BpeTokenizer::TokenToId(std::string_view token) const {
  auto it = token_to_id_.find(std::string(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

std::string BpeTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= spec_.vocab.size()) {
    throw std::out_of_range("token id " + std::to_string(id) + " is outside the vocabulary of " +
                            std::to_string(spec_.vocab.size()) + " tokens (" + spec_.source + ")");
  }
  auto added = added_by_id_.find(id);
  return added != added_by_id_.end() ? spec_.added[added->second].content : spec_.vocab[id];
}

std::string BpeTokenizer::Describe() const {
  std::string s = "byte-level BPE, " + std::to_string(spec_.vocab.size()) + " tokens, " +
                  std::to_string(spec_.merges.size()) +
                  " merges, pre-tokenizer: " + spec_.pre.Describe();
  if (!spec_.pre_name.empty()) s += " (" + spec_.pre_name + ")";
  if (spec_.nfc) s += ", NFC normalisation";
  return s;
}

}  // namespace diablo::model
