// LoadTokenizer: which implementation reads which model path.
#include "text/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "formats/gguf.h"
#include "text/bpe_tokenizer.h"
#ifdef DIABLO_WITH_SENTENCEPIECE
#include "text/sentencepiece_tokenizer.h"
#endif

namespace diablo::model {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::unique_ptr<Tokenizer> LoadSentencePieceOrExplain(const std::string& path) {
#ifdef DIABLO_WITH_SENTENCEPIECE
  return LoadSentencePiece(path);
#else
  throw std::runtime_error(path +
                           ": this build has no SentencePiece support (rebuild with "
                           "libsentencepiece-dev installed and -DDIABLO_WITH_SENTENCEPIECE=ON), "
                           "or point --model at the model's tokenizer.json instead");
#endif
}

}  // namespace

bool HaveSentencePiece() {
#ifdef DIABLO_WITH_SENTENCEPIECE
  return true;
#else
  return false;
#endif
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return std::binary_search(special_token_ids_.begin(), special_token_ids_.end(), id);
}

std::unique_ptr<Tokenizer> LoadTokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
      const fs::path candidate = fs::path(path) / name;
      if (fs::exists(candidate, ec)) return LoadTokenizer(candidate.string());
    }
    throw std::runtime_error(path +
                             ": the directory holds neither tokenizer.json nor "
                             "tokenizer.model; point --model at a .gguf file or a model "
                             "directory that has one of them");
  }
  if (!fs::exists(path, ec)) throw std::runtime_error(path + ": no such file or directory");
  if (EndsWith(path, ".gguf")) {
    const GgufFile file = GgufFile::Open(path);
    return LoadGgufTokenizer(file, path);
  }
  if (EndsWith(path, ".json")) return LoadTokenizerJson(path);
  if (EndsWith(path, ".model")) return LoadSentencePieceOrExplain(path);
  throw std::runtime_error(path +
                           ": not a known tokenizer file; expected a .gguf model, a "
                           "tokenizer.json, a tokenizer.model, or a directory holding one");
}

}  // namespace diablo::model
