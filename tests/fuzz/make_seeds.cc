// Writes the fuzzers' seed corpora: one small valid file per format, built
// byte by byte (GGUF, the pickle in torch.save's own opcodes) or with our
// writers (safetensors, the test zip builder), so nothing binary is committed.
// Usage: make_seeds <output folder>   (creates gguf/, safetensors/, torch_save/)
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "tests/formats/torch_save_builder.h"

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

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_seeds <output folder>\n";
    return 2;
  }
  try {
    fs::path root = argv[1];
    for (const char* sub : {"gguf", "safetensors", "torch_save", "job_spec"})
      fs::create_directories(root / sub);
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
