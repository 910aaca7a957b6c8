// `diablo merge` end to end on small models, against independent references:
// a random model saved by transformers with a random DiaBlo adapter (whose
// effect the reference computes from the method's definition, unmerged) or a
// LoRA adapter written and run by PEFT; the merged directory must load in
// transformers with the adapted model's logits.  Also: models written by our
// exporter load in transformers with our logits, for each family, and bad
// input fails with one clear message and leaves nothing on disk.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/worker/peft/merge_test_util.h"
#include "worker/peft/adapter_files.h"
#include "worker/peft/inject.h"

namespace diablo::model {
namespace {

using diablo::testing::Entries;
using diablo::testing::ReadBytes;
using diablo::testing::RunDiablo;
using diablo::testing::RunMergeReference;
using diablo::testing::ScratchDir;

struct Case {
  const char* name;
  const char* arch;    // of tests/worker/model/hf_reference.py tiny
  const char* method;  // diablo | lora
  const char* dtype;   // written
  std::vector<std::string> extra;
};

// Shown in test names instead of the struct's bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class MergeAgainstReference : public ::testing::TestWithParam<Case> {};

TEST_P(MergeAgainstReference, TransformersLoadsTheMergedModelWithTheAdaptedLogits) {
  if (!diablo::testing::HaveVenvPython()) GTEST_SKIP() << "needs the test venv";
  const Case& c = GetParam();
  ScratchDir dir;
  auto made =
      RunMergeReference({"tiny", "--arch", c.arch, "--method", c.method, "--out", dir / "ref"});
  ASSERT_EQ(made.exit_code, 0) << made.output;

  std::vector<std::string> args = {"merge",       "--model",           dir / "ref/model",
                                   "--adapter",   dir / "ref/adapter", "--out",
                                   dir / "merged"};
  if (std::string(c.dtype) != "float32") args.insert(args.end(), {"--dtype", c.dtype});
  args.insert(args.end(), c.extra.begin(), c.extra.end());
  auto merged = RunDiablo(args);
  ASSERT_EQ(merged.exit_code, 0) << merged.output;
  EXPECT_NE(merged.output.find(std::string("merged ")), std::string::npos) << merged.output;
  EXPECT_EQ(Entries(dir.path()), (std::vector<std::string>{"merged", "ref"}));

  // The source's tokenizer and generation files, byte for byte.
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                           "chat_template.jinja", "generation_config.json"}) {
    EXPECT_EQ(ReadBytes(dir / ("merged/" + std::string(name))),
              ReadBytes(dir / ("ref/model/" + std::string(name))))
        << name;
  }
  auto checked = RunMergeReference({"check", "--ref", dir / "ref", "--merged", dir / "merged",
                                    "--method", c.method, "--dtype", c.dtype});
  EXPECT_EQ(checked.exit_code, 0) << checked.output;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MergeAgainstReference,
    ::testing::Values(
        Case{"llama_diablo", "llama", "diablo", "float32", {}},
        Case{"tied_gqa_diablo", "gqa", "diablo", "float32", {}},
        Case{"tied_gqa_diablo_bf16", "gqa", "diablo", "bfloat16", {}},
        Case{"qwen2_lora", "qwen2", "lora", "float32", {}},
        Case{"llama31_lora_sharded", "llama31", "lora", "float32", {"--shard-size", "60KB"}},
        Case{"llama_diablo_fp16_sharded", "llama", "diablo", "float16", {"--shard-size", "30KiB"}}),
    [](const auto& info) { return std::string(info.param.name); });

// Our exporter's config.json for each family: transformers builds the same
// function from it (rope scaling recovered from frequencies, as for a GGUF).
struct Family {
  const char* name;
  LlamaConfig (*config)();
  bool gguf_rope = false;  // scale the frequencies as a GGUF rope_freqs tensor does
};

LlamaConfig LlamaWithBiases() {
  LlamaConfig c = diablo::testing::TinyConfig();
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  return c;
}
LlamaConfig TiedLlama31() {
  LlamaConfig c = diablo::testing::TinyConfig();
  c.tie_word_embeddings = true;
  c.rope_theta = 500000;
  c.head_dim = 64;  // enough frequencies in the interpolated band to recover the scaling
  return c;
}
LlamaConfig Qwen2() {
  LlamaConfig c = diablo::testing::TinyConfig();
  c.architecture = "Qwen2ForCausalLM";
  c.qkv_bias = true;
  c.rope_theta = 1e6;
  return c;
}
LlamaConfig Mistral() {
  LlamaConfig c = diablo::testing::TinyConfig();
  c.architecture = "MistralForCausalLM";
  c.head_dim = 32;  // wider than hidden / heads
  return c;
}

void PrintTo(const Family& f, std::ostream* os) { *os << f.name; }

class ExportedFamily : public ::testing::TestWithParam<Family> {};

TEST_P(ExportedFamily, TransformersGivesOurLogits) {
  if (!diablo::testing::HaveVenvPython()) GTEST_SKIP() << "needs the test venv";
  ScratchDir dir;
  LlamaForCausalLM model = diablo::testing::RandomModel(GetParam().config(), 21);
  if (GetParam().gguf_rope) {
    LlamaConfig scaled = model->config();
    scaled.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 32};
    model->ScaleRotaryFrequencies(RotaryInverseFrequencies(model->config()) /
                                  RotaryInverseFrequencies(scaled));
  }
  diablo::testing::WriteHfModel(*model, dir / "model");
  const std::vector<std::vector<int64_t>> ids = {{1, 5, 9, 33, 70, 100, 2, 64, 64, 3},
                                                 {7, 7, 7, 8, 50, 51, 52, 99, 0, 4}};
  std::ofstream(dir / "ids.json") << nlohmann::json(ids).dump();
  auto result = RunMergeReference(
      {"logits", "--model", dir / "model", "--ids", dir / "ids.json", "--out", dir / "logits.bin"});
  ASSERT_EQ(result.exit_code, 0) << result.output;

  at::Tensor input = at::tensor(ids[0], at::kLong).unsqueeze(0);
  input = at::cat({input, at::tensor(ids[1], at::kLong).unsqueeze(0)});
  at::NoGradGuard no_grad;
  const at::Tensor ours = model->forward(input).contiguous();
  std::string bytes = ReadBytes(dir / "logits.bin");
  ASSERT_EQ(bytes.size(), static_cast<size_t>(ours.numel()) * sizeof(float));
  const at::Tensor theirs = at::from_blob(bytes.data(), ours.sizes(), at::kFloat);
  const double diff = (ours - theirs).abs().max().item<double>();
  EXPECT_LE(diff, 1e-4) << GetParam().name << ": logits differ by " << diff;
  if (GetParam().gguf_rope) {
    const auto config = nlohmann::json::parse(ReadBytes(dir / "model/config.json"));
    EXPECT_EQ(config["rope_scaling"]["rope_type"], "llama3") << config.dump(1);
  }
}

INSTANTIATE_TEST_SUITE_P(Families, ExportedFamily,
                         ::testing::Values(Family{"llama_biases", LlamaWithBiases},
                                           Family{"tied_llama31_from_gguf_frequencies", TiedLlama31,
                                                  true},
                                           Family{"qwen2", Qwen2}, Family{"mistral", Mistral}),
                         [](const auto& info) { return std::string(info.param.name); });

// Bad input: one error line, exit 1, and nothing written anywhere.
class MergeRefuses : public ::testing::Test {
 protected:
  void SetUp() override {
    LlamaForCausalLM model = diablo::testing::RandomModel(diablo::testing::TinyConfig(), 1);
    diablo::testing::WriteHfModel(*model, dir_ / "model");
    peft::AdapterConfig config;
    config.blocks = 4;
    peft::InjectAdapters(*model, config);
    peft::SaveAdapter(*model, config, dir_ / "adapter");
  }

  // Runs merge with `args`; expects failure with `message` in the output
  // and the scratch directory holding exactly `entries` afterwards.
  void ExpectRefused(const std::vector<std::string>& args, const std::string& message,
                     const std::vector<std::string>& entries) {
    std::vector<std::string> full = {"merge"};
    full.insert(full.end(), args.begin(), args.end());
    const auto result = RunDiablo(full);
    EXPECT_EQ(result.exit_code, 1) << result.output;
    EXPECT_NE(result.output.find("diablo merge: error: "), std::string::npos) << result.output;
    EXPECT_NE(result.output.find(message), std::string::npos) << result.output;
    EXPECT_EQ(Entries(dir_.path()), entries);
  }

  ScratchDir dir_;
  const std::vector<std::string> kInputs = {"adapter", "model"};
};

TEST_F(MergeRefuses, AMissingAdapterDirectory) {
  ExpectRefused({"--model", dir_ / "model", "--adapter", dir_ / "nope", "--out", dir_ / "out"},
                "--adapter " + (dir_ / "nope") + ": no such directory", kInputs);
}

TEST_F(MergeRefuses, AnAdapterTrainedOnAnotherModel) {
  LlamaConfig other = diablo::testing::TinyConfig();
  other.intermediate_size = 128;
  LlamaForCausalLM model = diablo::testing::RandomModel(other, 2);
  peft::AdapterConfig config;
  config.blocks = 4;
  peft::InjectAdapters(*model, config);
  peft::SaveAdapter(*model, config, dir_ / "other");
  ExpectRefused({"--model", dir_ / "model", "--adapter", dir_ / "other", "--out", dir_ / "out"},
                "trained on another base model", {"adapter", "model", "other"});
}

TEST_F(MergeRefuses, AnExistingNonEmptyOutputUnlessForced) {
  std::filesystem::create_directories(dir_.path() / "out");
  std::ofstream(dir_ / "out/keep.txt") << "mine";
  ExpectRefused({"--model", dir_ / "model", "--adapter", dir_ / "adapter", "--out", dir_ / "out"},
                "--force", {"adapter", "model", "out"});
  EXPECT_EQ(ReadBytes(dir_ / "out/keep.txt"), "mine");

  const auto forced = RunDiablo({"merge", "--model", dir_ / "model", "--adapter", dir_ / "adapter",
                                 "--out", dir_ / "out", "--force"});
  ASSERT_EQ(forced.exit_code, 0) << forced.output;
  EXPECT_EQ(Entries(dir_.path() / "out"),
            (std::vector<std::string>{"config.json", "model.safetensors"}));
  EXPECT_EQ(Entries(dir_.path()), (std::vector<std::string>{"adapter", "model", "out"}));
}

TEST_F(MergeRefuses, TheModelItselfAsOutputAndABadShardSize) {
  ExpectRefused({"--model", dir_ / "model", "--adapter", dir_ / "adapter", "--out", dir_ / "model",
                 "--force"},
                "is the model or adapter being merged", kInputs);
  ExpectRefused({"--model", dir_ / "model", "--adapter", dir_ / "adapter", "--out", dir_ / "out",
                 "--shard-size", "lots"},
                "--shard-size 'lots'", kInputs);
}

TEST_F(MergeRefuses, AGgufVocabularyThatCannotBeExported) {
  // A GGUF header with a SentencePiece ("llama") vocabulary and nothing else:
  // the tokenizer is checked before any weight is read.
  std::string bytes;
  auto put = [&](const void* p, size_t n) { bytes.append(static_cast<const char*>(p), n); };
  auto put_u32 = [&](uint32_t v) { put(&v, 4); };
  auto put_u64 = [&](uint64_t v) { put(&v, 8); };
  auto put_str = [&](const std::string& s) {
    put_u64(s.size());
    put(s.data(), s.size());
  };
  put_u32(0x46554747);
  put_u32(3);
  put_u64(0);
  put_u64(2);
  for (const auto& [key, value] :
       {std::pair<std::string, std::string>{"general.architecture", "llama"},
        {"tokenizer.ggml.model", "llama"}}) {
    put_str(key);
    put_u32(8);
    put_str(value);
  }
  bytes.resize((bytes.size() + 31) / 32 * 32, '\0');
  diablo::testing::WriteBytes(dir_ / "sp.gguf", bytes);
  ExpectRefused({"--model", dir_ / "sp.gguf", "--adapter", dir_ / "adapter", "--out", dir_ / "out"},
                "only byte-level BPE", {"adapter", "model", "sp.gguf"});
}

}  // namespace
}  // namespace diablo::model
