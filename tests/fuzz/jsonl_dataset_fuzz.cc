// libFuzzer target for the JSONL training-data reader (text/dataset.h):
// the input is written to a file and loaded in every data format with every
// chat template family, tokenized by a tiny byte-level BPE tokenizer
// (tiny_tokenizer.h).  std::invalid_argument (a line the reader refuses) is
// expected; any other exception, a crash or a sanitizer report is a bug, and
// so is an accepted dataset that breaks the contract of Example and
// DatasetStats (checked in CheckDataset).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/fuzz/tiny_tokenizer.h"
#include "text/bpe_tokenizer.h"
#include "text/chat_template.h"
#include "text/dataset.h"

namespace {

namespace fs = std::filesystem;
using diablo::model::ChatTemplate;
using diablo::train::DataConfig;
using diablo::train::DataFormat;
using diablo::train::Dataset;

// SmolLM2's ChatML template: it adds a default system turn when there is none.
constexpr const char* kSmolLmTemplate =
    R"({% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %})"
    R"({{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n' }})"
    R"({% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>')"
    R"( + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }})"
    R"({% endif %})";

void WriteFile(const fs::path& path, const void* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) abort();
}

struct Fixture {
  fs::path dir;
  std::unique_ptr<diablo::model::Tokenizer> tokenizer;
  std::vector<ChatTemplate> templates;
};

void RemoveScratch();

// Built once per process: a scratch folder with the tokenizer (BOS and EOS
// named in tokenizer_config.json) and one template of each family.
const Fixture& GetFixture() {
  static Fixture* fixture = [] {
    auto* f = new Fixture;
    f->dir = fs::temp_directory_path() / ("diablo-jsonl-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(f->dir);
    std::atexit(RemoveScratch);
    const std::string tokenizer = diablo::fuzz::TinyTokenizerJson().dump();
    const std::string config = R"({"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"})";
    WriteFile(f->dir / "tokenizer.json", tokenizer.data(), tokenizer.size());
    WriteFile(f->dir / "tokenizer_config.json", config.data(), config.size());
    f->tokenizer = diablo::model::LoadTokenizerJson((f->dir / "tokenizer.json").string());
    const auto tokens = diablo::model::TemplateTokensOf(*f->tokenizer);
    f->templates.push_back(ChatTemplate::FromJinja(kSmolLmTemplate, tokens, "fuzz"));
    for (const char* name : {"llama2", "llama3", "mistral", "alpaca"}) {
      f->templates.push_back(ChatTemplate::FromName(name, tokens));
    }
    return f;
  }();
  return *fixture;
}

void RemoveScratch() {
  std::error_code ec;
  fs::remove_all(GetFixture().dir, ec);
}

uint32_t Fnv1a(const uint8_t* data, size_t size) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 16777619u;
  return h;
}

// The knobs that change what the reader keeps, picked from `h`.
DataConfig ConfigFor(DataFormat format, uint32_t h) {
  static constexpr int64_t kLengths[] = {1, 3, 8, 24, 64, 512, 512, 4096};
  DataConfig config;
  config.format = format;
  config.max_seq_len = kLengths[h % 8];
  config.truncation =
      (h >> 3) & 1 ? diablo::train::Truncation::kDrop : diablo::train::Truncation::kRight;
  config.packing = (h >> 4) & 1;
  config.train_on_prompt = ((h >> 5) & 3) == 0;
  return config;
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

// What every accepted dataset guarantees its users (the batcher, the loss).
void CheckDataset(const Dataset& d, const DataConfig& config, size_t vocab_size) {
  Check(!d.examples.empty());
  Check(d.format != DataFormat::kAuto);
  Check(config.format == DataFormat::kAuto || d.format == config.format);
  int64_t tokens = 0, labels = 0;
  for (const diablo::train::Example& e : d.examples) {
    Check(!e.ids.empty());
    Check(e.ids.size() == e.target.size());
    Check(static_cast<int64_t>(e.ids.size()) <= config.max_seq_len);
    for (int32_t id : e.ids) Check(id >= 0 && static_cast<size_t>(id) < vocab_size);
    for (uint8_t t : e.target) {
      Check(t <= 1);
      // Plain text is all target, and train_on_prompt makes everything one.
      if (config.train_on_prompt || d.format == DataFormat::kText) Check(t == 1);
    }
    Check(e.label_count() >= 1);  // an example with nothing to learn is dropped
    tokens += static_cast<int64_t>(e.ids.size());
    labels += e.label_count();
  }
  Check(d.stats.examples == static_cast<int64_t>(d.examples.size()));
  Check(d.stats.tokens == tokens);
  Check(d.stats.label_tokens == labels);
  Check(d.stats.dropped >= 0 && d.stats.truncated >= 0);
  Check(d.stats.truncated + d.stats.dropped <= d.stats.lines);
  // Each line is refused, dropped, or one example; packing only joins them.
  const int64_t kept = d.stats.lines - d.stats.dropped;
  Check(config.packing ? d.stats.examples <= kept : d.stats.examples == kept);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& f = GetFixture();
  const std::string path = (f.dir / "data.jsonl").string();
  WriteFile(path, data, size);
  const uint32_t seed = Fnv1a(data, size);
  uint32_t variant = 0;
  for (DataFormat format :
       {DataFormat::kAuto, DataFormat::kAlpaca, DataFormat::kChat, DataFormat::kText}) {
    for (const ChatTemplate& chat : f.templates) {
      const DataConfig config = ConfigFor(format, seed + 0x9E3779B9u * variant++);
      Dataset dataset;
      try {
        dataset = diablo::train::LoadDataset(path, config, *f.tokenizer, chat);
      } catch (const std::invalid_argument&) {
        continue;
      }
      CheckDataset(dataset, config, f.tokenizer->vocab_size());
    }
  }
  return 0;
}
