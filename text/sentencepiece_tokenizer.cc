// SentencePiece behind the Tokenizer interface: the library encodes each
// stretch of text between special pieces; this file adds what Hugging Face's
// Llama tokenizer adds around it (BOS/EOS, special pieces in text, offsets).
#include "text/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "formats/bounded_json.h"
#include "formats/gguf.h"

namespace diablo::model {
namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(std::string path, bool add_bos, bool add_eos)
      : path_(std::move(path)), add_bos_(add_bos), add_eos_(add_eos) {
    const auto status = processor_.Load(path_);
    if (!status.ok()) {
      throw FormatError(path_ + ": not a SentencePiece model (" + status.ToString() + ")");
    }
    auto id_or = [](int id) { return id >= 0 ? std::optional<int32_t>(id) : std::nullopt; };
    special_ids_ = {id_or(processor_.bos_id()), id_or(processor_.eos_id()),
                    id_or(processor_.unk_id()), id_or(processor_.pad_id())};
    for (int id = 0; id < processor_.GetPieceSize(); ++id) {
      if (processor_.IsControl(id) || processor_.IsUnknown(id)) {
        special_token_ids_.push_back(id);
        if (!processor_.IdToPiece(id).empty()) specials_in_text_.push_back(id);
      }
    }
    // Longest first, so "<s>" never shadows a longer piece it starts.
    std::stable_sort(specials_in_text_.begin(), specials_in_text_.end(), [&](int a, int b) {
      return processor_.IdToPiece(a).size() > processor_.IdToPiece(b).size();
    });
  }

  Encoding EncodeWithOffsets(std::string_view text, const EncodeOptions& options) const override {
    Encoding out;
    if (options.add_special && add_bos_ && special_ids_.bos) {
      out.ids.push_back(*special_ids_.bos);
      out.offsets.emplace_back(0, 0);
    }
    size_t pos = 0;
    while (pos <= text.size()) {
      size_t found = text.size(), length = 0;
      int found_id = -1;
      if (options.parse_special) FindSpecial(text, pos, &found, &length, &found_id);
      EncodeStretch(text.substr(pos, found - pos), pos, &out);
      if (found_id < 0) break;
      out.ids.push_back(found_id);
      out.offsets.emplace_back(found, found + length);
      pos = found + length;
    }
    if (options.add_special && add_eos_ && special_ids_.eos) {
      out.ids.push_back(*special_ids_.eos);
      out.offsets.emplace_back(text.size(), text.size());
    }
    return out;
  }

  std::string Decode(std::span<const int32_t> ids, bool skip_special) const override {
    // The library drops control pieces; write them as text unless skipped,
    // decoding the stretches between them on their own.
    std::string text;
    std::vector<int> stretch;
    auto flush = [&] {
      if (!stretch.empty()) text += processor_.DecodeIds(stretch);
      stretch.clear();
    };
    for (int32_t id : ids) {
      CheckId(id);
      if (processor_.IsControl(id)) {
        flush();
        if (!skip_special) text += processor_.IdToPiece(id);
      } else if (!(skip_special && processor_.IsUnknown(id))) {
        stretch.push_back(id);
      }
    }
    flush();
    return text;
  }

  std::optional<int32_t> TokenToId(std::string_view token) const override {
    const int id = processor_.PieceToId(token);
    // PieceToId answers unk for unknown pieces; only an exact piece counts.
    if (id < 0 || processor_.IdToPiece(id) != token) return std::nullopt;
    return id;
  }

  std::string IdToToken(int32_t id) const override {
    CheckId(id);
    return processor_.IdToPiece(id);
  }

  size_t vocab_size() const override { return static_cast<size_t>(processor_.GetPieceSize()); }

  std::string Describe() const override {
    return "SentencePiece, " + std::to_string(vocab_size()) + " pieces (" + path_ + ")";
  }

 private:
  void CheckId(int32_t id) const {
    if (id < 0 || id >= processor_.GetPieceSize()) {
      throw std::out_of_range("token id " + std::to_string(id) + " is outside the vocabulary of " +
                              std::to_string(processor_.GetPieceSize()) + " pieces (" + path_ +
                              ")");
    }
  }

  void FindSpecial(std::string_view text, size_t from, size_t* found, size_t* length,
                   int* found_id) const {
    for (size_t pos = from; pos < text.size(); ++pos) {
      for (int id : specials_in_text_) {
        const std::string& piece = processor_.IdToPiece(id);
        if (text.compare(pos, piece.size(), piece) == 0) {
          *found = pos;
          *length = piece.size();
          *found_id = id;
          return;
        }
      }
    }
  }

  void EncodeStretch(std::string_view text, size_t offset, Encoding* out) const {
    if (text.empty()) return;
    const auto spt = processor_.EncodeAsImmutableProto(text);
    for (const auto& piece : spt.pieces()) {
      out->ids.push_back(static_cast<int32_t>(piece.id()));
      out->offsets.emplace_back(offset + piece.begin(), offset + piece.end());
    }
  }

  std::string path_;
  bool add_bos_, add_eos_;
  sentencepiece::SentencePieceProcessor processor_;
  std::vector<int32_t> specials_in_text_;
};

bool ConfigFlag(const std::string& model_path, const char* key, bool fallback) {
  const auto config = std::filesystem::path(model_path).parent_path() / "tokenizer_config.json";
  if (!std::filesystem::exists(config)) return fallback;
  std::ifstream in(config);
  std::stringstream buffer;
  buffer << in.rdbuf();
  nlohmann::json j;
  try {
    j = ParseBoundedJson(buffer.str());
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(config.string() + ": not valid JSON (" + e.what() + ")");
  } catch (const JsonTooDeep& e) {
    throw FormatError(config.string() + ": " + e.what());
  }
  return j.contains(key) && j[key].is_boolean() ? j[key].get<bool>() : fallback;
}

}  // namespace

std::unique_ptr<Tokenizer> LoadSentencePiece(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path, ConfigFlag(path, "add_bos_token", true),
                                                  ConfigFlag(path, "add_eos_token", false));
}

}  // namespace diablo::model
