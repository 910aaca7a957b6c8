// Datasets checked at submit: every line, with the model's tokenizer and
// chat template when the scheduler can load them (a model folder, an
// uploaded GGUF copied into the bounded submit cache), the record rules
// otherwise; errors that name the field and line and never the scheduler's
// paths; the bounds (bytes read, slots, tokenizers kept, cache bytes).
#include "server/dataset_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/sha256.h"
#include "server/model_tokenizers.h"
#include "server/spec_validation.h"
#include "server/submit_checks.h"
#include "tests/fuzz/tiny_tokenizer.h"
#include "tests/server/scheduler_test_util.h"
#include "text/bpe_tokenizer.h"
#include "text/chat_template.h"

namespace diablo::server::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

// ChatML as SmolLM2 ships it, without the default system turn.
constexpr char kChatMl[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

constexpr char kConfig[] = R"({"architectures":["LlamaForCausalLM"],"model_type":"llama",
  "vocab_size":300,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
  "num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":512,
  "rms_norm_eps":1e-5,"tie_word_embeddings":true})";

constexpr char kAlpaca[] = R"({"instruction":"copy","input":"abc","output":"abc"})";
constexpr char kNoOutput[] = R"({"instruction":"copy","input":"abc"})";

// `count` lines of `line`, then `last` (when given).
std::string Lines(int count, const std::string& line, const std::string& last = "") {
  std::string out;
  out.reserve((line.size() + 1) * static_cast<size_t>(count) + last.size() + 1);
  for (int i = 0; i < count; ++i) out += line + "\n";
  if (!last.empty()) out += last + "\n";
  return out;
}

// A Hugging Face style folder: config.json, the tiny byte-level tokenizer,
// and tokenizer_config.json naming BOS/EOS and (optionally) a ChatML template.
void WriteModelFolder(const fs::path& dir, bool with_template = true) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << kConfig;
  std::ofstream(dir / "tokenizer.json") << fuzz::TinyTokenizerJson().dump();
  nlohmann::json config = {{"bos_token", "<|endoftext|>"}, {"eos_token", "<|im_end|>"}};
  if (with_template) config["chat_template"] = kChatMl;
  std::ofstream(dir / "tokenizer_config.json") << config.dump();
}

template <typename T>
void Put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// A GGUF file holding a small Llama's shape and the tiny tokenizer (no
// tensors: the scheduler reads only the header).
std::string TinyGguf(bool with_template = true) {
  const nlohmann::json tok = fuzz::TinyTokenizerJson();
  std::vector<std::string> tokens(tok["model"]["vocab"].size() + tok["added_tokens"].size());
  for (const auto& [spelling, id] : tok["model"]["vocab"].items())
    tokens[id.get<size_t>()] = spelling;
  std::vector<int32_t> types(tokens.size(), 1);  // normal
  for (const auto& added : tok["added_tokens"]) {
    tokens[added["id"].get<size_t>()] = added["content"].get<std::string>();
    types[added["id"].get<size_t>()] = added["special"].get<bool>() ? 3 : 4;  // control, user
  }
  const auto id_of = [&](const std::string& spelling) {
    return static_cast<uint32_t>(std::find(tokens.begin(), tokens.end(), spelling) -
                                 tokens.begin());
  };
  std::string g, kv;
  uint64_t kv_count = 0;
  auto str = [](std::string& out, const std::string& s) {
    Put<uint64_t>(out, s.size());
    out += s;
  };
  auto key = [&](const std::string& name, uint32_t type) {
    str(kv, name);
    Put<uint32_t>(kv, type);
    ++kv_count;
  };
  auto u32 = [&](const std::string& name, uint32_t value) {
    key(name, 4);
    Put<uint32_t>(kv, value);
  };
  auto string = [&](const std::string& name, const std::string& value) {
    key(name, 8);
    str(kv, value);
  };
  auto strings = [&](const std::string& name, const std::vector<std::string>& values) {
    key(name, 9);
    Put<uint32_t>(kv, 8);
    Put<uint64_t>(kv, values.size());
    for (const std::string& v : values) str(kv, v);
  };
  string("general.architecture", "llama");
  u32("llama.embedding_length", 64);
  u32("llama.feed_forward_length", 128);
  u32("llama.block_count", 2);
  u32("llama.attention.head_count", 4);
  u32("llama.attention.head_count_kv", 2);
  string("tokenizer.ggml.model", "gpt2");
  strings("tokenizer.ggml.tokens", tokens);
  key("tokenizer.ggml.token_type", 9);
  Put<uint32_t>(kv, 5);  // i32 elements
  Put<uint64_t>(kv, types.size());
  for (int32_t t : types) Put<int32_t>(kv, t);
  strings("tokenizer.ggml.merges", tok["model"]["merges"].get<std::vector<std::string>>());
  u32("tokenizer.ggml.bos_token_id", id_of("<|endoftext|>"));
  u32("tokenizer.ggml.eos_token_id", id_of("<|im_end|>"));
  if (with_template) string("tokenizer.chat_template", kChatMl);
  Put<uint32_t>(g, 0x46554747);  // "GGUF"
  Put<uint32_t>(g, 3);
  Put<uint64_t>(g, 0);  // tensors
  Put<uint64_t>(g, kv_count);
  g += kv;
  g.append((32 - g.size() % 32) % 32, '\0');
  return g;
}

// ---- the line check itself, on bytes in memory

class DatasetCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("diablo-dscheck-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    WriteModelFolder(dir_ / "model");
    tokenizer_ = model::LoadTokenizer((dir_ / "model").string());
    chat_.emplace(model::ChatTemplate::ForModel((dir_ / "model").string(), *tokenizer_));
  }
  void TearDown() override { fs::remove_all(dir_); }

  static DatasetBytes InMemory(std::string text) {
    auto data = std::make_shared<std::string>(std::move(text));
    DatasetBytes bytes;
    bytes.size = static_cast<int64_t>(data->size());
    bytes.read = [data](int64_t offset, int64_t length) -> absl::StatusOr<std::string> {
      return data->substr(static_cast<size_t>(offset), static_cast<size_t>(length));
    };
    return bytes;
  }
  DatasetCheck Tokenized(int64_t max_bytes = int64_t{64} << 20) {
    DatasetCheck check;
    check.field = "data.train";
    check.tokenizer = tokenizer_.get();
    check.chat_template = &*chat_;
    check.max_bytes = max_bytes;
    return check;
  }
  static DatasetCheck RecordsOnly() {
    DatasetCheck check;
    check.field = "data.train";
    return check;
  }
  static std::string Message(const absl::Status& status) { return std::string(status.message()); }

  fs::path dir_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
  std::optional<model::ChatTemplate> chat_;
};

TEST_F(DatasetCheckTest, ABrokenLineFarBeyondTheFirstMiBIsFoundWithItsNumber) {
  const int good = 60000;  // about 3.2 MB of records before it
  const DatasetBytes bytes = InMemory(Lines(good, kAlpaca, kNoOutput) + kAlpaca + "\n");
  ASSERT_GT(bytes.size, 3'000'000);
  const std::string expected =
      "spec.data.train: line " + std::to_string(good + 1) + ": missing field \"output\"";
  DatasetCheck tokenized = Tokenized();
  tokenized.chunk_bytes = 64 << 10;  // many chunks
  absl::Status status = CheckDatasetLines(tokenized, bytes, {});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Message(status), expected);
  // Without a tokenizer the record rules find it too.
  status = CheckDatasetLines(RecordsOnly(), bytes, {});
  EXPECT_EQ(Message(status), expected);
}

TEST_F(DatasetCheckTest, LinesSplitAcrossChunksReadAsWhole) {
  DatasetCheck check = Tokenized();
  check.chunk_bytes = 7;
  EXPECT_TRUE(CheckDatasetLines(check, InMemory(Lines(50, kAlpaca)), {}).ok());
  const absl::Status status =
      CheckDatasetLines(check, InMemory(Lines(20, kAlpaca, "{\"instruction\": 3}")), {});
  EXPECT_EQ(Message(status), "spec.data.train: line 21: field \"instruction\" must be a string");
}

TEST_F(DatasetCheckTest, TheRecordRulesNeedNoTokenizer) {
  const auto error = [&](const std::string& text) {
    return Message(CheckDatasetLines(RecordsOnly(), InMemory(text), {}));
  };
  EXPECT_EQ(error(Lines(2, kAlpaca, R"({"text": "hello"})")),
            "spec.data.train: line 3: expected a alpaca record, found text");
  EXPECT_EQ(error(Lines(1, kAlpaca, "{oops")), "spec.data.train: line 2: not valid JSON");
  EXPECT_EQ(error("[1, 2]\n"), "spec.data.train: line 1: each line must be a JSON object");
  EXPECT_EQ(error(R"({"messages": [{"role": "user", "content": "a"}]})"
                  "\n"),
            "spec.data.train: line 1: no \"assistant\" message: nothing to learn");
  EXPECT_EQ(error("\n  \n"), "spec.data.train: has no records (an empty JSONL file)");
  train::DataConfig chat;
  chat.format = train::DataFormat::kChat;
  EXPECT_EQ(Message(CheckDatasetLines(RecordsOnly(), InMemory(Lines(1, kAlpaca)), chat)),
            "spec.data.train: line 1: expected a chat record, found alpaca");
}

TEST_F(DatasetCheckTest, NoExampleThatFitsMaxSeqLenIsRefusedAfterTokenisation) {
  const DatasetBytes bytes = InMemory(Lines(3, kAlpaca));
  train::DataConfig config;
  config.max_seq_len = 8;
  config.truncation = train::Truncation::kDrop;
  absl::Status status = CheckDatasetLines(Tokenized(), bytes, config);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status),
              HasSubstr("spec.data.train: no example fits data.max_seq_len 8 after tokenisation "
                        "with the model's tokenizer (the shortest of its 3 examples has "));
  EXPECT_THAT(Message(status), HasSubstr("set data.truncation: right"));
  config.truncation = train::Truncation::kRight;  // cut to 8: the prompt alone, nothing to learn
  status = CheckDatasetLines(Tokenized(), bytes, config);
  EXPECT_THAT(Message(status),
              HasSubstr("leaves no response token to learn from; raise data.max_seq_len to at "
                        "least "));
  config.max_seq_len = 512;
  EXPECT_TRUE(CheckDatasetLines(Tokenized(), bytes, config).ok());
  // Without a tokenizer nothing is known about lengths.
  config.max_seq_len = 8;
  EXPECT_TRUE(CheckDatasetLines(RecordsOnly(), bytes, config).ok());
}

TEST_F(DatasetCheckTest, OneExampleThatFitsIsEnough) {
  train::DataConfig config;
  config.max_seq_len = 40;
  config.truncation = train::Truncation::kDrop;
  const std::string long_one =
      R"({"instruction":"copy this rather long instruction","input":"abcdefghijklmnop","output":"x"})";
  EXPECT_FALSE(CheckDatasetLines(Tokenized(), InMemory(Lines(3, long_one)), config).ok());
  EXPECT_TRUE(CheckDatasetLines(Tokenized(), InMemory(Lines(3, long_one, kAlpaca)), config).ok());
}

TEST_F(DatasetCheckTest, TheTrainersChatTemplateRulesApply) {
  const model::ChatTemplate mistral =
      model::ChatTemplate::FromName("mistral", model::TemplateTokensOf(*tokenizer_));
  DatasetCheck check = Tokenized();
  check.chat_template = &mistral;
  const std::string system_first =
      R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},)"
      R"( {"role": "assistant", "content": "a"}]})";
  const absl::Status status = CheckDatasetLines(check, InMemory(system_first + "\n"), {});
  EXPECT_THAT(Message(status), HasSubstr("spec.data.train: line 1: Mistral chat template"));
}

TEST_F(DatasetCheckTest, ALargerFileIsCheckedInItsFirstBytesOnly) {
  const std::string head = Lines(20, kAlpaca);                   // 20 whole lines
  const int64_t limit = static_cast<int64_t>(head.size()) + 10;  // ends inside line 21
  // An error past the limit is the trainer's to find.
  EXPECT_TRUE(
      CheckDatasetLines(Tokenized(limit), InMemory(Lines(30, kAlpaca, kNoOutput)), {}).ok());
  // Line 21 is cut at the limit: not an error.
  EXPECT_TRUE(CheckDatasetLines(Tokenized(limit), InMemory(Lines(30, kAlpaca)), {}).ok());
  // One inside the limit is found.
  const absl::Status status =
      CheckDatasetLines(Tokenized(limit), InMemory(Lines(5, kAlpaca, kNoOutput) + head), {});
  EXPECT_EQ(Message(status), "spec.data.train: line 6: missing field \"output\"");
  // No usable example in the part read is not proof that the file has none.
  train::DataConfig config;
  config.max_seq_len = 8;
  config.truncation = train::Truncation::kDrop;
  EXPECT_TRUE(CheckDatasetLines(Tokenized(limit), InMemory(Lines(30, kAlpaca)), config).ok());
  EXPECT_FALSE(CheckDatasetLines(Tokenized(), InMemory(Lines(30, kAlpaca)), config).ok());
}

TEST_F(DatasetCheckTest, AStorageFailureWhileReadingIsUnavailable) {
  DatasetBytes bytes = InMemory(Lines(1000, kAlpaca));
  auto inner = bytes.read;
  bytes.read = [inner](int64_t offset, int64_t length) -> absl::StatusOr<std::string> {
    if (offset > 0) return absl::UnavailableError("storage did not answer");
    return inner(offset, length);
  };
  DatasetCheck check = Tokenized();
  check.chunk_bytes = 1024;
  const absl::Status status = CheckDatasetLines(check, bytes, {});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Message(status), HasSubstr("spec.data.train: reading it failed"));
}

// ---- through ValidateCreateJob

class SubmitDatasetsTest : public SchedulerFixture {
 protected:
  void SetUp() override {
    SchedulerFixture::SetUp();
    WriteModelFolder(dir_ / "model");
    data_ = dir_ / "train.jsonl";
    std::ofstream(data_) << Lines(4, kAlpaca);
    request_.mutable_spec()->set_model((dir_ / "model").string());
    request_.mutable_spec()->mutable_data()->set_train(data_.string());
    request_.mutable_spec()->mutable_optim()->set_max_steps(1);
    inputs_.Grant("a", {}, {dir_.string()});
  }

  // The submit checks with `options`, held for the test as the server holds
  // them.
  void UseOptions(const SubmitCheckOptions& options) {
    auto opened = SubmitChecks::Open(dir_ / "cache", options);
    ASSERT_TRUE(opened.ok()) << opened.status();
    checks_ = *opened;
  }

  absl::StatusOr<ValidatedJob> Validate() {
    return ValidateCreateJob(
        request_, ValidationContext{scheduler_.get(), "a", dir_ / "cache", &inputs_, nullptr});
  }
  std::string ErrorOf(absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
    auto job = Validate();
    EXPECT_EQ(job.status().code(), code) << job.status();
    const std::string message(job.status().message());
    EXPECT_THAT(message, Not(HasSubstr((dir_ / "cache").string())));
    EXPECT_THAT(message, Not(HasSubstr((dir_ / "storage").string())));
    return message;
  }

  // Stores `content` as tenant a's upload `id` named `name`.
  std::string Upload(const std::string& id, const std::string& name, const std::string& content) {
    const fs::path staged = dir_ / ("staged-" + id);
    std::ofstream(staged, std::ios::binary) << content;
    EXPECT_TRUE(scheduler_->storage().PutFile("files/" + id, staged).ok());
    v1::UploadHeader header;
    header.set_name(name);
    header.set_size_bytes(static_cast<int64_t>(content.size()));
    header.set_sha256(Sha256Hex(content));
    EXPECT_TRUE(scheduler_->AddFile("a", header, "files/" + id).ok());
    return "upload://" + id;
  }

  int64_t CachedBytes() {
    int64_t total = 0;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(dir_ / "cache", ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
      if (it->is_regular_file()) total += static_cast<int64_t>(it->file_size());
    return total;
  }

  fs::path data_;
  v1::CreateJobRequest request_;
  InputPolicy inputs_;
  std::shared_ptr<SubmitChecks> checks_;
};

TEST_F(SubmitDatasetsTest, ALocalModelsTokenizerChecksEveryLine) {
  ASSERT_TRUE(Validate().ok());
  const int good = 40000;  // over 2 MB of records before the broken one
  std::ofstream(data_, std::ios::trunc) << Lines(good, kAlpaca, kNoOutput);
  EXPECT_EQ(ErrorOf(),
            "spec.data.train: line " + std::to_string(good + 1) + ": missing field \"output\"");
}

TEST_F(SubmitDatasetsTest, ExamplesLongerThanMaxSeqLenAreRefusedAtSubmit) {
  request_.mutable_spec()->mutable_data()->set_max_seq_len(8);
  request_.mutable_spec()->mutable_data()->set_truncation("drop");
  EXPECT_THAT(ErrorOf(), HasSubstr("spec.data.train: no example fits data.max_seq_len 8 after "
                                   "tokenisation with the model's tokenizer"));
  request_.mutable_spec()->mutable_data()->set_max_seq_len(256);
  EXPECT_TRUE(Validate().ok());
}

TEST_F(SubmitDatasetsTest, TheEvalDatasetIsCheckedToo) {
  std::ofstream(dir_ / "eval.jsonl") << Lines(3, kAlpaca, R"({"text": "x"})");
  request_.mutable_spec()->mutable_data()->set_eval((dir_ / "eval.jsonl").string());
  EXPECT_EQ(ErrorOf(), "spec.data.eval: line 4: expected a alpaca record, found text");
}

TEST_F(SubmitDatasetsTest, AModelWithoutAChatTemplateNeedsDataTemplate) {
  WriteModelFolder(dir_ / "model", /*with_template=*/false);
  const std::string message = ErrorOf();
  EXPECT_THAT(message, HasSubstr("spec.data.template: auto uses the model's own chat template"));
  EXPECT_THAT(message, HasSubstr("set data.template to one of"));
  request_.mutable_spec()->mutable_data()->set_template_("chatml");
  EXPECT_TRUE(Validate().ok()) << Validate().status();
}

TEST_F(SubmitDatasetsTest, AnUnknownTemplateIsRefusedEvenWithoutATokenizer) {
  fs::remove(dir_ / "model" / "tokenizer.json");
  request_.mutable_spec()->mutable_data()->set_template_("vicuna");
  EXPECT_THAT(ErrorOf(), HasSubstr("spec.data.template: unknown chat template \"vicuna\""));
}

TEST_F(SubmitDatasetsTest, WithoutATokenizerEveryLineStillGetsTheRecordRules) {
  fs::remove(dir_ / "model" / "tokenizer.json");  // config.json only
  request_.mutable_spec()->mutable_data()->set_max_seq_len(8);
  EXPECT_TRUE(Validate().ok()) << "lengths are not known without a tokenizer";
  std::ofstream(data_, std::ios::app) << Lines(30000, kAlpaca, R"({"instruction": 1})");
  EXPECT_EQ(ErrorOf(), "spec.data.train: line 30005: field \"instruction\" must be a string");
}

TEST_F(SubmitDatasetsTest, ASentencePieceModelIsNeverLoadedInTheScheduler) {
  // The scheduler's build has no SentencePiece (server/CMakeLists.txt): a
  // tokenizer.model is not read, the record rules apply, nothing crashes.
  fs::remove(dir_ / "model" / "tokenizer.json");
  std::ofstream(dir_ / "model" / "tokenizer.model") << "\x0a\x05hello not a real model";
  EXPECT_FALSE(model::HaveSentencePiece());
  EXPECT_TRUE(Validate().ok()) << Validate().status();
  std::ofstream(data_, std::ios::app) << "{oops\n";
  EXPECT_EQ(ErrorOf(), "spec.data.train: line 5: not valid JSON");
}

TEST_F(SubmitDatasetsTest, AnUploadedDatasetIsReadInPlaceAndNamedAsTheUserWroteIt) {
  request_.mutable_spec()->mutable_data()->set_train(
      Upload("f-data", "train.jsonl", Lines(30000, kAlpaca, kNoOutput)));
  EXPECT_EQ(ErrorOf(), "spec.data.train: line 30001: missing field \"output\"");
  EXPECT_EQ(CachedBytes(), 0) << "datasets are streamed, never copied";
}

TEST_F(SubmitDatasetsTest, AnUploadedGgufIsCopiedIntoTheCacheAndItsTokenizerUsed) {
  request_.mutable_spec()->set_model(Upload("f-model", "tiny.gguf", TinyGguf()));
  auto job = Validate();
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_GT(job->estimated_bytes, 0);
  request_.mutable_spec()->mutable_data()->set_max_seq_len(8);
  request_.mutable_spec()->mutable_data()->set_truncation("drop");
  EXPECT_THAT(ErrorOf(), HasSubstr("no example fits data.max_seq_len 8 after tokenisation"));
  // A GGUF without a template: the message names the upload, not the copy.
  request_.mutable_spec()->set_model(Upload("f-bare", "bare.gguf", TinyGguf(false)));
  EXPECT_THAT(ErrorOf(), HasSubstr("spec.data.template: auto uses the model's own chat template, "
                                   "which the trainer cannot use: upload://f-bare: no "
                                   "tokenizer.chat_template in the metadata"));
}

TEST_F(SubmitDatasetsTest, TheModelCopiesStayWithinTheCacheBound) {
  const std::string gguf = TinyGguf();
  SubmitCheckOptions options;
  options.object_cache_bytes = static_cast<int64_t>(gguf.size()) * 2 + 8192;  // two copies
  UseOptions(options);
  for (int i = 0; i < 5; ++i) {
    // Five different files (the name and a byte of padding differ).
    std::string content = gguf;
    content.append(static_cast<size_t>(32 * (i + 1)), '\0');
    request_.mutable_spec()->set_model(
        Upload("f-m" + std::to_string(i), "m" + std::to_string(i) + ".gguf", content));
    auto job = Validate();
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_GT(job->estimated_bytes, 0);
    EXPECT_LE(CachedBytes(), options.object_cache_bytes);
  }
  // A model larger than the cache is not copied: the submit still passes,
  // without an estimate.
  options.object_cache_bytes = 4096;
  checks_.reset();
  UseOptions(options);
  request_.mutable_spec()->set_model(Upload("f-big", "big.gguf", TinyGguf()));
  auto job = Validate();
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->estimated_bytes, 0);
}

TEST_F(SubmitDatasetsTest, ChecksTakeASlotAndAPassedCheckIsRemembered) {
  SubmitCheckOptions options;
  options.concurrent_dataset_checks = 1;
  options.dataset_check_wait = absl::ZeroDuration();
  UseOptions(options);
  {
    absl::StatusOr<SubmitChecks::Slot> busy = checks_->AcquireDatasetSlot("b");
    ASSERT_TRUE(busy.ok());
    EXPECT_THAT(ErrorOf(absl::StatusCode::kUnavailable),
                HasSubstr("the scheduler is busy checking other submits' datasets (1 at once"));
  }
  ASSERT_TRUE(Validate().ok());
  {
    absl::StatusOr<SubmitChecks::Slot> busy = checks_->AcquireDatasetSlot("b");
    ASSERT_TRUE(busy.ok());
    EXPECT_TRUE(Validate().ok()) << "the same file and settings passed already";
    request_.mutable_spec()->mutable_data()->set_max_seq_len(100);
    EXPECT_EQ(Validate().status().code(), absl::StatusCode::kUnavailable)
        << "other settings are checked again";
  }
}

// One tenant's parallel submits cannot hold every slot: a second tenant
// gets the one left while the first waits for its own.
TEST_F(SubmitDatasetsTest, OneTenantHoldsAtMostItsShareOfTheSlots) {
  SubmitCheckOptions options;
  options.concurrent_dataset_checks = 2;
  options.concurrent_dataset_checks_per_tenant = 1;
  options.dataset_check_wait = absl::ZeroDuration();
  UseOptions(options);
  absl::StatusOr<SubmitChecks::Slot> first = checks_->AcquireDatasetSlot("greedy");
  ASSERT_TRUE(first.ok());
  absl::StatusOr<SubmitChecks::Slot> second = checks_->AcquireDatasetSlot("greedy");
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("the share of one tenant"));
  absl::StatusOr<SubmitChecks::Slot> other = checks_->AcquireDatasetSlot("patient");
  EXPECT_TRUE(other.ok()) << "another tenant still gets a slot";
  absl::StatusOr<SubmitChecks::Slot> third = checks_->AcquireDatasetSlot("third");
  EXPECT_EQ(third.status().code(), absl::StatusCode::kUnavailable) << "the global limit holds";
  first = absl::UnavailableError("released");  // gives greedy's slot back
  EXPECT_TRUE(checks_->AcquireDatasetSlot("greedy").ok()) << "a released slot is usable again";
}

TEST_F(SubmitDatasetsTest, ZeroCheckBytesReadsNoDataset) {
  SubmitCheckOptions options;
  options.dataset_check_bytes = 0;
  UseOptions(options);
  std::ofstream(data_, std::ios::app) << "{oops\n";
  EXPECT_TRUE(Validate().ok());
}

// ---- the tokenizers kept

TEST(ModelTokenizersTest, KeepsAFewAndLoadsAChangedModelAgain) {
  const fs::path dir =
      fs::temp_directory_path() / ("diablo-tokenizers-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  WriteModelFolder(dir / "a");
  WriteModelFolder(dir / "b");
  fs::create_directories(dir / "config-only");
  std::ofstream(dir / "config-only" / "config.json") << kConfig;
  ModelTokenizers tokenizers(1);
  auto a = tokenizers.Get((dir / "a").string(), "");
  ASSERT_NE(a->tokenizer, nullptr) << a->tokenizer_error;
  EXPECT_TRUE(a->chat_template.has_value()) << a->template_error;
  EXPECT_EQ(tokenizers.Get((dir / "a").string(), ""), a) << "kept";
  tokenizers.Get((dir / "b").string(), "");
  EXPECT_EQ(tokenizers.size(), 1u);
  EXPECT_NE(tokenizers.Get((dir / "a").string(), ""), a) << "forgotten, loaded again";
  auto none = tokenizers.Get((dir / "config-only").string(), "");
  EXPECT_EQ(none->tokenizer, nullptr);
  EXPECT_THAT(none->tokenizer_error, HasSubstr("neither tokenizer.json nor tokenizer.model"));
  // A changed tokenizer.json is a different model.
  auto before = tokenizers.Get((dir / "a").string(), "");
  std::ofstream(dir / "a" / "tokenizer.json", std::ios::app) << "\n";
  EXPECT_NE(tokenizers.Get((dir / "a").string(), ""), before);
  // One too large to parse at submit is not (a sparse file: no disk used).
  fs::resize_file(dir / "a" / "tokenizer.json", std::uintmax_t{65} << 20);
  auto huge = tokenizers.Get((dir / "a").string(), "");
  EXPECT_EQ(huge->tokenizer, nullptr);
  EXPECT_THAT(huge->tokenizer_error, HasSubstr("a submit check parses"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace diablo::server::testing
