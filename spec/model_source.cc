// ReadModelSource: picks the reader by what the path is, and reads only the
// metadata (the GGUF tensor directory is parsed, tensor data is not touched).
#include "spec/model_source.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "formats/bounded_json.h"
#include "formats/gguf.h"

namespace diablo::estimate {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

model::LlamaConfig ReadConfigJson(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw std::invalid_argument(file + ": cannot be read");
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json j;
  try {
    j = ParseBoundedJson(text.str());
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(file + ": not valid JSON (" + e.what() + ")");
  } catch (const JsonTooDeep& e) {
    throw std::invalid_argument(file + ": " + e.what());
  }
  if (!j.is_object()) throw std::invalid_argument(file + ": expected a JSON object");
  return model::ConfigFromHfJson(j, file);
}

}  // namespace

ModelSource ReadModelSource(const std::string& path) {
  namespace fs = std::filesystem;
  ModelSource source;
  source.path = path;
  if (!fs::exists(path)) {
    throw std::invalid_argument(path +
                                ": no such file or directory (give a .gguf file, a "
                                "Hugging Face model directory or its config.json)");
  }
  if (fs::is_directory(path)) {
    const std::string config = (fs::path(path) / "config.json").string();
    if (!fs::exists(config)) {
      throw std::invalid_argument(path +
                                  ": the directory has no config.json (is it a Hugging "
                                  "Face model directory?)");
    }
    source.format = "hf";
    source.config = ReadConfigJson(config);
  } else if (EndsWith(path, ".gguf")) {
    const model::GgufFile file = model::GgufFile::Open(path);
    source.format = "gguf";
    source.config = model::ConfigFromGguf(file, path);
    for (const auto& tensor : file.tensors()) source.stored_weight_bytes += tensor.byte_size;
  } else if (EndsWith(path, ".json")) {
    source.format = "hf";
    source.config = ReadConfigJson(path);
  } else {
    throw std::invalid_argument(path +
                                ": not a model (give a .gguf file, a Hugging Face model "
                                "directory or its config.json)");
  }
  return source;
}

}  // namespace diablo::estimate
