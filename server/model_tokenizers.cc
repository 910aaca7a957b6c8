// Loading models' tokenizers and chat templates at submit, kept in an LRU.
#include "server/model_tokenizers.h"

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"

namespace diablo::server {
namespace {

namespace fs = std::filesystem;

// Size and modification time of each file LoadTokenizer and
// ChatTemplate::ForModel may read at `path`.
std::string StampOf(const fs::path& path) {
  std::error_code ec;
  std::string stamp;
  auto add = [&](const fs::path& file) {
    std::error_code stat;
    const auto size = fs::file_size(file, stat);
    if (stat) return;
    const auto modified = fs::last_write_time(file, stat);
    if (stat) return;
    absl::StrAppend(&stamp, file.filename().string(), ":", size, "@",
                    modified.time_since_epoch().count(), ";");
  };
  if (fs::is_directory(path, ec)) {
    for (const char* name :
         {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "chat_template.jinja"})
      add(path / name);
  } else {
    add(path);
    // Beside a tokenizer.json: its tokenizer_config.json and template.
    for (const char* name : {"tokenizer_config.json", "chat_template.jinja"})
      add(path.parent_path() / name);
  }
  return stamp;
}

// The JSON files LoadTokenizer and ChatTemplate::ForModel would parse whole
// (tokenizer.json, tokenizer_config.json), which a tenant's folder may make
// as large as it likes; real ones stay far below this.  A GGUF's metadata
// is parsed for the memory estimate anyway.
constexpr std::uintmax_t kMaxTokenizerFileBytes = std::uintmax_t{64} << 20;

// A JSON file at `model_path` larger than kMaxTokenizerFileBytes, or "".
std::string OversizedJson(const fs::path& model_path) {
  std::error_code ec;
  std::vector<fs::path> files;
  if (fs::is_directory(model_path, ec)) {
    files = {model_path / "tokenizer.json", model_path / "tokenizer_config.json"};
  } else if (model_path.extension() == ".json") {
    files = {model_path, model_path.parent_path() / "tokenizer_config.json"};
  }
  for (const fs::path& file : files) {
    std::error_code stat;
    const std::uintmax_t size = fs::file_size(file, stat);
    if (!stat && size > kMaxTokenizerFileBytes)
      return absl::StrCat(file.string(), " has ", size, " bytes, more than the ",
                          kMaxTokenizerFileBytes, " a submit check parses");
  }
  return "";
}

std::shared_ptr<const ModelTokenizers::Loaded> Load(const std::string& model_path,
                                                    const std::string& key) {
  auto loaded = std::make_shared<ModelTokenizers::Loaded>();
  loaded->key = key;
  loaded->tokenizer_error = OversizedJson(model_path);
  if (!loaded->tokenizer_error.empty()) return loaded;
  try {
    loaded->tokenizer = model::LoadTokenizer(model_path);
  } catch (const std::exception& e) {
    loaded->tokenizer_error = e.what();
    return loaded;
  }
  try {
    loaded->chat_template = model::ChatTemplate::ForModel(model_path, *loaded->tokenizer);
  } catch (const std::exception& e) {
    loaded->template_error = e.what();
  }
  return loaded;
}

}  // namespace

std::shared_ptr<const ModelTokenizers::Loaded> ModelTokenizers::Get(const std::string& model_path,
                                                                    const std::string& stamp) {
  const std::string key =
      absl::StrCat(model_path, "\n", stamp.empty() ? StampOf(model_path) : stamp);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (const auto* cached = cache_.Get(key)) return *cached;
  }
  // Loading takes a while (a large vocabulary): not under the lock.  Two
  // submits of a new model may both load it; the second result is kept.
  std::shared_ptr<const Loaded> loaded = Load(model_path, key);
  std::lock_guard<std::mutex> lock(mu_);
  cache_.Put(key, loaded);
  return loaded;
}

size_t ModelTokenizers::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cache_.size();
}

}  // namespace diablo::server
