// Writes the fuzzers' seed corpora: small valid files per format, built
// byte by byte (GGUF, the pickle in torch.save's own opcodes) or with our
// writers (safetensors, the test zip builder), so nothing binary is committed.
// Usage: make_seeds <output folder>   (creates gguf/, safetensors/, torch_save/,
// job_spec/, jsonl_dataset/, tokenizer_json/)
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "formats/safetensors.h"
#include "tests/formats/torch_save_builder.h"
#include "tests/fuzz/tiny_tokenizer.h"
#include "text/pre_tokenizer.h"

namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;

template <typename T>
void Put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

void WriteFile(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

// GGUF v3: three metadata values (string, alignment, string array) and two
// tensors (F32 [2, 4] and one Q8_0 block), data aligned to 32 bytes.
std::string MakeGguf() {
  std::string g;
  auto str = [&](const std::string& s) {
    Put<uint64_t>(g, s.size());
    g += s;
  };
  Put<uint32_t>(g, 0x46554747);
  Put<uint32_t>(g, 3);
  Put<uint64_t>(g, 2);  // tensors
  Put<uint64_t>(g, 3);  // metadata
  str("general.architecture");
  Put<uint32_t>(g, 8);
  str("llama");
  str("general.alignment");
  Put<uint32_t>(g, 4);
  Put<uint32_t>(g, 32);
  str("tokenizer.ggml.tokens");
  Put<uint32_t>(g, 9);
  Put<uint32_t>(g, 8);
  Put<uint64_t>(g, 2);
  str("<s>");
  str("hi");
  str("a");  // F32, ggml dims innermost first
  Put<uint32_t>(g, 2);
  Put<uint64_t>(g, 4);
  Put<uint64_t>(g, 2);
  Put<uint32_t>(g, 0);
  Put<uint64_t>(g, 0);
  str("b");  // Q8_0, 32 elements = one 34-byte block
  Put<uint32_t>(g, 1);
  Put<uint64_t>(g, 32);
  Put<uint32_t>(g, 8);
  Put<uint64_t>(g, 32);
  g.append((32 - g.size() % 32) % 32, '\0');
  for (int i = 0; i < 8; ++i) Put<float>(g, 0.5f * static_cast<float>(i));
  for (int i = 0; i < 34; ++i) g.push_back(static_cast<char>(i));
  return g;
}

// A pickle shaped like torch.save's for {"layer.block_A": bf16 [2, 2, 3],
// "view": f32 [6, 2] view with offset 1 and stride [4, 1] of a 24-element
// storage}, with memo puts and gets as torch writes them.
std::string MakePickle() {
  std::string p = "\x80\x02}q\x00("s;  // the literal holds a NUL
  auto unicode = [&](const std::string& s) {
    p += 'X';
    Put<uint32_t>(p, s.size());
    p += s;
  };
  auto small = [&](int v) {
    p += 'K';
    p += static_cast<char>(v);
  };
  unicode("layer.block_A");
  p += "ctorch._utils\n_rebuild_tensor_v2\nq\x01((";
  unicode("storage");
  p += "ctorch\nBFloat16Storage\n";
  unicode("0");
  unicode("cpu");
  small(12);
  p += "tQ";
  small(0);
  small(2), small(2), small(3), p += '\x87';
  small(6), small(3), small(1), p += '\x87';
  p += "\x89"
       "ccollections\nOrderedDict\nq\x02)RtR";
  unicode("view");
  p += "h\x01((";
  unicode("storage");
  p += "ctorch\nFloatStorage\n";
  unicode("1");
  unicode("cpu");
  small(24);
  p += "tQ";
  small(1);
  small(6), small(2), p += '\x86';
  small(4), small(1), p += '\x86';
  p += "\x89h\x02)RtRu.";
  return p;
}

std::string Floats(int n, float scale) {
  std::string s;
  for (int i = 0; i < n; ++i) Put<float>(s, scale * static_cast<float>(i));
  return s;
}

// JSONL training data in each format the reader knows, with the corners
// users write: blank lines, CRLF, null fields, escapes, non-ASCII text,
// special-token spellings inside content.
void WriteJsonlSeeds(const fs::path& dir) {
  WriteFile(dir / "alpaca.jsonl",
            R"({"instruction": "Add the numbers.", "input": "12 + 30", "output": "42"})"
            "\n"
            R"({"instruction": "Say hello in Japanese.", "input": null, "output": "\u3053\u3093)"
            R"(\u306b\u3061\u306f"})"
            "\r\n\n"
            R"({"instruction": "Repeat: <|im_end|>", "output": "<|im_end|> [SEP] the end\n"})"
            "\n");
  WriteFile(dir / "chat.jsonl",
            R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user",)"
            R"( "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]})"
            "\n"
            R"({"messages": [{"role": "user", "content": "  What is 2+2? "}, {"role":)"
            R"( "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}, {"role":)"
            R"( "assistant", "content": " 6 \t"}]})"
            "\n");
  WriteFile(dir / "chat_pair.jsonl",  // a conversation every template family takes
            R"({"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant",)"
            R"( "content": "Blue."}]})"
            "\n");
  WriteFile(dir / "text.jsonl", R"({"text": "The thing is, it's 2024.\n\nNew paragraph\ttabbed."})"
                                "\n\n"
                                R"({"text": "caf\u00e9 e\u0301 \ud83d\udc4d <|endoftext|>"})"
                                "\n");
}

// tokenizer.json variants that the reader accepts: the tiny tokenizer as is,
// then with the other pre-tokenizers (Llama-3 and Qwen2 split regexes,
// prefix space), NFC, a template post-processor, pair-form merges and
// ignore_merges, so each branch of the reader starts covered.
void WriteTokenizerSeeds(const fs::path& dir) {
  using nlohmann::json;
  // The smallest shape the reader accepts: short inputs mutate fastest.
  WriteFile(dir / "minimal.json",
            R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3},)"
            R"( "merges": ["a b"]}, "pre_tokenizer": {"type": "ByteLevel"}, "decoder": null,)"
            R"( "added_tokens": [{"id": 4, "content": "<s>", "special": true}]})");
  const json tiny = diablo::fuzz::TinyTokenizerJson();
  WriteFile(dir / "tiny.json", tiny.dump(1));

  auto split = [](std::string_view digits) {
    return json{
        {"type", "Split"},
        {"pattern",
         {{"Regex", std::string(diablo::model::kLlama3SplitRegexHead) + std::string(digits) +
                        std::string(diablo::model::kLlama3SplitRegexTail)}}},
        {"behavior", "Isolated"},
        {"invert", false}};
  };
  auto byte_level = [](bool use_regex, bool prefix_space) {
    return json{{"type", "ByteLevel"},
                {"add_prefix_space", prefix_space},
                {"trim_offsets", true},
                {"use_regex", use_regex}};
  };
  const int32_t bos = tiny["added_tokens"][0]["id"];

  json llama3 = tiny;
  llama3["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers", json::array({split(R"(\p{N}{1,3})"), byte_level(false, false)})}};
  llama3["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<|endoftext|>"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"special_tokens", {{"<|endoftext|>", {{"id", "<|endoftext|>"}, {"ids", {bos}}}}}}};
  llama3["model"]["ignore_merges"] = true;
  WriteFile(dir / "llama3.json", llama3.dump(1));

  json qwen2 = tiny;
  qwen2["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFC"}}})}};
  qwen2["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers", json::array({split(R"(\p{N})"), byte_level(false, false)})}};
  qwen2["added_tokens"].push_back(
      {{"id", 1000}, {"content", "the"}, {"special", false}, {"single_word", true}});
  WriteFile(dir / "qwen2.json", qwen2.dump(1));

  json gpt2 = tiny;
  gpt2["pre_tokenizer"] = byte_level(true, true);
  json pairs = json::array();
  for (const json& m : tiny["model"]["merges"]) {
    const std::string line = m;
    pairs.push_back(json::array({line.substr(0, line.find(' ')), line.substr(line.find(' ') + 1)}));
  }
  gpt2["model"]["merges"] = pairs;
  gpt2["model"]["unk_token"] = "<|endoftext|>";
  gpt2["decoder"] = nullptr;
  WriteFile(dir / "gpt2.json", gpt2.dump());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_seeds <output folder>\n";
    return 2;
  }
  try {
    fs::path root = argv[1];
    for (const char* sub :
         {"gguf", "safetensors", "torch_save", "job_spec", "jsonl_dataset", "tokenizer_json"})
      fs::create_directories(root / sub);
    WriteJsonlSeeds(root / "jsonl_dataset");
    WriteTokenizerSeeds(root / "tokenizer_json");
    WriteFile(root / "job_spec" / "minimal.json",
              R"({"model": "/m.gguf", "data": {"train": "/t.jsonl"}, "output_dir": "/out"})");
    WriteFile(
        root / "job_spec" / "full.json",
        R"({"model": "/m.gguf", "method": {"name": "lora", "rank": 8, "alpha": 16, "dropout": 0.05,)"
        R"( "target_modules": ["q_proj", "re:.*v_proj"]}, "data": {"train": "/t.jsonl", "eval": "/e.jsonl",)"
        R"( "format": "chat", "max_seq_len": 256, "truncation": "drop", "packing": true},)"
        R"( "optim": {"max_steps": 10, "global_batch": 8, "micro_batch": 2, "lr": 3e-4,)"
        R"( "betas": [0.9, 0.95], "scheduler": "cosine", "warmup_ratio": 0.1, "seed": 7},)"
        R"( "precision": "bf16", "gradient_checkpointing": true, "save_every": 5,)"
        R"( "output_dir": "/out", "device": "cpu", "threads": 2})");

    WriteFile(root / "gguf" / "valid.gguf", MakeGguf());

    std::string a = Floats(6, 0.25f), bf16(8, '\x3f');
    int64_t scalar = 7;
    std::vector<diablo::model::SafetensorsEntry> entries = {
        {"model.layers.0.q_proj.block_A",
         diablo::model::SafetensorsDtype::kF32,
         {1, 2, 3},
         {reinterpret_cast<const uint8_t*>(a.data()), a.size()}},
        {"lora_B",
         diablo::model::SafetensorsDtype::kBF16,
         {2, 2},
         {reinterpret_cast<const uint8_t*>(bf16.data()), bf16.size()}},
        {"step",
         diablo::model::SafetensorsDtype::kI64,
         {},
         {reinterpret_cast<const uint8_t*>(&scalar), sizeof(scalar)}},
        {"empty", diablo::model::SafetensorsDtype::kF16, {0, 4}, {}},
    };
    diablo::model::WriteSafetensors((root / "safetensors" / "valid.safetensors").string(), entries,
                                    {{"format", "pt"}});

    std::string pickle = MakePickle();
    std::string bf16_storage(24, '\x3f');
    WriteFile(root / "torch_save" / "data.pkl", pickle);
    WriteFile(root / "torch_save" / "adapter.pt",
              diablo::testing::StoredZip({{"adapter/data.pkl", pickle},
                                          {"adapter/byteorder", "little"},
                                          {"adapter/data/0", bf16_storage},
                                          {"adapter/data/1", Floats(24, 1.0f)},
                                          {"adapter/version", "3\n"}}));
  } catch (const std::exception& e) {
    std::cerr << "make_seeds: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
