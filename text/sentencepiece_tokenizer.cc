// SentencePiece behind the Tokenizer interface: the library encodes each
// stretch of text between special pieces; this file adds what Hugging Face's
// Llama tokenizer adds around it (BOS/EOS, special pieces in text, offsets).
// The library itself is reached only through the plugin of
// sentencepiece_plugin.h, loaded on the first tokenizer.model (why: there).
#include "text/sentencepiece_tokenizer.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "formats/bounded_json.h"
#include "formats/gguf.h"
#include "text/sentencepiece_plugin.h"

// text/CMakeLists.txt passes the plugin's file name and the folder the build
// writes it to (the last place looked: test binaries live elsewhere).
#ifndef DIABLO_SENTENCEPIECE_PLUGIN_NAME
#define DIABLO_SENTENCEPIECE_PLUGIN_NAME "diablo_sentencepiece.so"
#endif
#ifndef DIABLO_SENTENCEPIECE_PLUGIN_BUILD_DIR
#define DIABLO_SENTENCEPIECE_PLUGIN_BUILD_DIR ""
#endif

// The sanitizer runtimes refuse RTLD_DEEPBIND (they die in dlopen; see
// github.com/google/sanitizers/issues/611), so those builds load the plugin
// without it, and libsentencepiece's FLAGS_minloglevel binds to LibTorch's
// again there (tests/text/sentencepiece_isolation_test.cc skips).
#ifndef DIABLO_SPM_DEEPBIND
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DIABLO_SPM_DEEPBIND 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define DIABLO_SPM_DEEPBIND 0
#endif
#endif
#endif
#ifndef DIABLO_SPM_DEEPBIND
#define DIABLO_SPM_DEEPBIND RTLD_DEEPBIND
#endif

namespace diablo::model {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPluginEnv = "DIABLO_SENTENCEPIECE_PLUGIN";

// dlopen + dlsym of one plugin file; never closed (libsentencepiece's
// static objects live as long as the process).
const DiabloSpmApi* OpenPlugin(const std::string& plugin, const std::string& model_path) {
  void* handle = dlopen(plugin.c_str(), RTLD_NOW | RTLD_LOCAL | DIABLO_SPM_DEEPBIND);
  if (handle == nullptr) {
    const char* error = dlerror();
    const std::string why = error != nullptr ? error : "dlopen failed";
    throw std::runtime_error(
        model_path + ": cannot load the SentencePiece plugin " + plugin + " (" + why + "); " +
        (why.find("libsentencepiece") != std::string::npos
             ? "it needs the system's libsentencepiece (Debian/Ubuntu: apt-get install "
               "libsentencepiece0)"
             : "install the " DIABLO_SENTENCEPIECE_PLUGIN_NAME " built with this diablo"));
  }
  const auto entry = reinterpret_cast<DiabloSpmEntryFn>(dlsym(handle, DIABLO_SPM_ENTRY_POINT));
  if (entry == nullptr) {
    dlclose(handle);
    throw std::runtime_error(
        model_path + ": " + plugin + " is not the DiaBlo SentencePiece plugin (it has no " +
        DIABLO_SPM_ENTRY_POINT + "); set " + kPluginEnv +
        " to the " DIABLO_SENTENCEPIECE_PLUGIN_NAME " built with this diablo, or unset it");
  }
  const DiabloSpmApi* api = entry(DIABLO_SPM_ABI_VERSION);
  if (api == nullptr) {
    dlclose(handle);
    throw std::runtime_error(model_path + ": the SentencePiece plugin " + plugin +
                             " belongs to another version of diablo; install the " +
                             DIABLO_SENTENCEPIECE_PLUGIN_NAME " built with this one beside it");
  }
  return api;
}

// $DIABLO_SENTENCEPIECE_PLUGIN if set, else the first of: beside the running
// executable, ../lib/ beside it, the build's output folder.
const DiabloSpmApi* FindPlugin(const std::string& model_path) {
  if (const char* env = std::getenv(kPluginEnv); env != nullptr && *env != '\0') {
    std::error_code ec;
    if (!fs::is_regular_file(env, ec)) {
      throw std::runtime_error(model_path + ": " + kPluginEnv + " names " + env +
                               ", which is not a file; point it at " +
                               DIABLO_SENTENCEPIECE_PLUGIN_NAME " or unset it");
    }
    return OpenPlugin(env, model_path);
  }
  std::vector<fs::path> places;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    places.push_back(exe.parent_path());
    places.push_back((exe.parent_path() / ".." / "lib").lexically_normal());
  }
  if (*DIABLO_SENTENCEPIECE_PLUGIN_BUILD_DIR != '\0') {
    places.emplace_back(DIABLO_SENTENCEPIECE_PLUGIN_BUILD_DIR);
  }
  std::string looked;
  for (size_t i = 0; i < places.size(); ++i) {
    const fs::path& place = places[i];
    if (std::find(places.begin(), places.begin() + i, place) != places.begin() + i) continue;
    const fs::path candidate = place / DIABLO_SENTENCEPIECE_PLUGIN_NAME;
    if (fs::is_regular_file(candidate, ec)) return OpenPlugin(candidate.string(), model_path);
    looked += (looked.empty() ? "" : ", ") + place.string();
  }
  throw std::runtime_error(model_path + ": SentencePiece support is in the plugin " +
                           DIABLO_SENTENCEPIECE_PLUGIN_NAME ", which is not in " + looked +
                           "; install it beside the diablo binary (or in ../lib/), set " +
                           kPluginEnv + " to its full path, or point --model at the model's " +
                           "tokenizer.json instead");
}

// Loaded once, on the first tokenizer.model; a failed load is retried.
const DiabloSpmApi& Plugin(const std::string& model_path) {
  static const DiabloSpmApi* const api = FindPlugin(model_path);
  return *api;
}

// Runs `body` inside one of the plugin's callbacks: no exception may cross
// its C interface, so one is kept in `error` (the callback returns 1, which
// stops the plugin) and rethrown once the plugin has returned.
template <typename Body>
int KeepException(std::exception_ptr* error, Body body) {
  try {
    body();
    return 0;
  } catch (...) {
    *error = std::current_exception();
    return 1;
  }
}

// After a plugin call: an exception a callback kept is rethrown first (it is
// why the call stopped); otherwise a failed call becomes an error naming the
// model, `what` the call was asked to do, and the plugin's message.
void FinishCall(int rc, const std::exception_ptr& kept, const std::string& path,
                const std::string& what, const char* error) {
  if (kept) std::rethrow_exception(kept);
  if (rc != DIABLO_SPM_OK)
    throw std::runtime_error(path + ": SentencePiece could not " + what + " (" + error + ")");
}

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(const DiabloSpmApi& api, std::string path, bool add_bos, bool add_eos)
      : api_(api),
        path_(std::move(path)),
        add_bos_(add_bos),
        add_eos_(add_eos),
        model_(nullptr, {&api}) {
    char error[1024] = "";
    model_.reset(api_.load(path_.c_str(), error, sizeof error));
    if (model_ == nullptr) {
      throw FormatError(path_ + ": not a SentencePiece model (" + error + ")");
    }
    const DiabloSpm* m = model_.get();
    auto id_or = [](int32_t id) { return id >= 0 ? std::optional<int32_t>(id) : std::nullopt; };
    special_ids_ = {id_or(api_.bos_id(m)), id_or(api_.eos_id(m)), id_or(api_.unk_id(m)),
                    id_or(api_.pad_id(m))};
    // The vocabulary is copied once: the hot paths (special pieces in text,
    // decoding) then never cross into the plugin per piece.
    const int32_t size = std::max<int32_t>(api_.piece_size(m), 0);
    pieces_.reserve(size);
    kinds_.reserve(size);
    for (int32_t id = 0; id < size; ++id) {
      size_t length = 0;
      const char* piece = api_.id_to_piece(m, id, &length);
      pieces_.emplace_back(piece != nullptr ? piece : "", length);
      kinds_.push_back(api_.is_control(m, id)   ? Kind::kControl
                       : api_.is_unknown(m, id) ? Kind::kUnknown
                                                : Kind::kNormal);
      if (kinds_.back() != Kind::kNormal) {
        special_token_ids_.push_back(id);
        if (!pieces_.back().empty()) specials_in_text_.push_back(id);
      }
    }
    // Longest first, so "<s>" never shadows a longer piece it starts.
    std::stable_sort(specials_in_text_.begin(), specials_in_text_.end(),
                     [&](int32_t a, int32_t b) { return pieces_[a].size() > pieces_[b].size(); });
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
      int32_t found_id = -1;
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
    std::vector<int32_t> stretch;
    auto flush = [&] {
      if (!stretch.empty()) DecodeStretch(stretch, &text);
      stretch.clear();
    };
    for (int32_t id : ids) {
      CheckId(id);
      if (kinds_[id] == Kind::kControl) {
        flush();
        if (!skip_special) text += pieces_[id];
      } else if (!(skip_special && kinds_[id] == Kind::kUnknown)) {
        stretch.push_back(id);
      }
    }
    flush();
    return text;
  }

  std::optional<int32_t> TokenToId(std::string_view token) const override {
    const int32_t id = api_.piece_to_id(model_.get(), token.data(), token.size());
    // PieceToId answers unk for unknown pieces; only an exact piece counts.
    if (id < 0 || static_cast<size_t>(id) >= pieces_.size() || pieces_[id] != token) {
      return std::nullopt;
    }
    return id;
  }

  std::string IdToToken(int32_t id) const override {
    CheckId(id);
    return pieces_[id];
  }

  size_t vocab_size() const override { return pieces_.size(); }

  std::string Describe() const override {
    return "SentencePiece, " + std::to_string(vocab_size()) + " pieces (" + path_ + ")";
  }

 private:
  enum class Kind : uint8_t { kNormal, kControl, kUnknown };

  struct ModelDeleter {
    const DiabloSpmApi* api;
    void operator()(DiabloSpm* model) const { api->free(model); }
  };

  // What a plugin callback collects; an exception (bad_alloc) is carried
  // back over the C boundary and rethrown here.
  struct EncodeSink {
    Encoding* out;
    size_t offset;
    std::exception_ptr error;
  };
  struct DecodeSink {
    std::string* text;
    std::exception_ptr error;
  };

  void CheckId(int32_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= pieces_.size()) {
      throw std::out_of_range("token id " + std::to_string(id) + " is outside the vocabulary of " +
                              std::to_string(pieces_.size()) + " pieces (" + path_ + ")");
    }
  }

  void FindSpecial(std::string_view text, size_t from, size_t* found, size_t* length,
                   int32_t* found_id) const {
    for (size_t pos = from; pos < text.size(); ++pos) {
      for (int32_t id : specials_in_text_) {
        const std::string& piece = pieces_[id];
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
    EncodeSink sink{out, offset, nullptr};
    auto on_piece = [](void* context, int32_t id, size_t begin, size_t end) -> int {
      auto* s = static_cast<EncodeSink*>(context);
      return KeepException(&s->error, [&] {
        s->out->ids.push_back(id);
        s->out->offsets.emplace_back(s->offset + begin, s->offset + end);
      });
    };
    char error[1024] = "";
    const int rc =
        api_.encode(model_.get(), text.data(), text.size(), on_piece, &sink, error, sizeof error);
    FinishCall(rc, sink.error, path_, "encode a text of " + std::to_string(text.size()) + " bytes",
               error);
  }

  void DecodeStretch(const std::vector<int32_t>& ids, std::string* text) const {
    DecodeSink sink{text, nullptr};
    auto on_text = [](void* context, const char* data, size_t size) -> int {
      auto* s = static_cast<DecodeSink*>(context);
      return KeepException(&s->error, [&] { s->text->append(data, size); });
    };
    char error[1024] = "";
    const int rc =
        api_.decode(model_.get(), ids.data(), ids.size(), on_text, &sink, error, sizeof error);
    FinishCall(rc, sink.error, path_, "decode " + std::to_string(ids.size()) + " ids", error);
  }

  const DiabloSpmApi& api_;
  std::string path_;
  bool add_bos_, add_eos_;
  std::unique_ptr<DiabloSpm, ModelDeleter> model_;
  std::vector<std::string> pieces_;
  std::vector<Kind> kinds_;
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
  const bool add_bos = ConfigFlag(path, "add_bos_token", true);
  const bool add_eos = ConfigFlag(path, "add_eos_token", false);
  return std::make_unique<SentencePieceTokenizer>(Plugin(path), path, add_bos, add_eos);
}

}  // namespace diablo::model
