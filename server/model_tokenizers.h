// The tokenizers and chat templates of the models jobs name, loaded at submit
// so that datasets are checked with the very tokenizer and template the
// trainer will use (text/tokenizer.h, text/chat_template.h).  At most a few
// models are kept, the least recently used forgotten first; each is keyed by
// its path and a stamp of what was loaded (sizes and modification times of
// the files, or the identity of the object a copy came from), so a model
// that changed is loaded again.  Loading from a GGUF reads its metadata
// only: the file is mapped, its tensors are not read.  A tokenizer.json or
// tokenizer_config.json over 64 MiB is not parsed (the model then counts as
// having no tokenizer).
//
// Thread-safe; a loaded tokenizer is shared by the checks using it and stays
// alive while they run, even once forgotten here.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/lru_cache.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace diablo::server {

class ModelTokenizers {
 public:
  struct Loaded {
    std::string key;  // the model's path and stamp: what was loaded
    // Null when the model has no tokenizer this build can load (a folder
    // holding only config.json, an unreadable or unsupported file).
    std::unique_ptr<const model::Tokenizer> tokenizer;
    std::string tokenizer_error;  // why not; names the scheduler's paths
    // The model's own chat template (data.template: auto), when it has one
    // the trainer recognises; otherwise why not (names the model's path).
    std::optional<model::ChatTemplate> chat_template;
    std::string template_error;
  };

  // REQUIRES: entries > 0.
  explicit ModelTokenizers(size_t entries) : cache_(entries) {}

  // The tokenizer and template of the model at `model_path` (a .gguf file,
  // a tokenizer file or a model directory, as LoadTokenizer takes).
  // `stamp` names the content when the caller knows it (a copy of an object);
  // empty: stamped from the files at the path.  Never null.
  std::shared_ptr<const Loaded> Get(const std::string& model_path, const std::string& stamp);

  size_t size() const;

 private:
  mutable std::mutex mu_;
  LruCache<std::string, std::shared_ptr<const Loaded>> cache_;  // guarded by mu_
};

}  // namespace diablo::server
