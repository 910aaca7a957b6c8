// JSONL datasets: the three formats, which tokens are targets, truncation,
// packing, and errors that name file and line.
#include "text/dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/worker/train/train_test_util.h"
#include "text/tokenizer.h"

namespace diablo::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using train::DataConfig;
using train::Dataset;

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeScratch("dataset");
    WriteTinyLlm(dir_ / "model");
    tokenizer_ = model::LoadTokenizer((dir_ / "model").string());
  }
  Dataset Load(const std::string& lines, DataConfig config = {}) {
    std::ofstream(dir_ / "d.jsonl") << lines;
    config.train = (dir_ / "d.jsonl").string();
    auto chat = model::ChatTemplate::ForModel((dir_ / "model").string(), *tokenizer_);
    return train::LoadDataset(config.train, config, *tokenizer_, chat);
  }
  std::string Targets(const train::Example& e) {
    std::vector<int32_t> ids;
    for (size_t t = 0; t < e.ids.size(); ++t)
      if (e.target[t]) ids.push_back(e.ids[t]);
    return tokenizer_->Decode(ids);
  }
  std::string ErrorOf(const std::string& lines, DataConfig config = {}) {
    try {
      Load(lines, config);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "";
  }
  fs::path dir_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
};

TEST_F(DatasetTest, AlpacaLearnsTheResponseAndTheEndOfTurnOnly) {
  Dataset d = Load(R"({"instruction": "copy", "input": "abc", "output": "abc!"})"
                   "\n");
  ASSERT_EQ(d.examples.size(), 1u);
  EXPECT_EQ(d.format, train::DataFormat::kAlpaca);
  EXPECT_EQ(tokenizer_->Decode(d.examples[0].ids),
            "<|im_start|>user\ncopy\n\nabc<|im_end|>\n<|im_start|>assistant\nabc!<|im_end|>\n");
  EXPECT_EQ(Targets(d.examples[0]), "abc!<|im_end|>");
}

TEST_F(DatasetTest, ChatLearnsEveryAssistantTurn) {
  Dataset d = Load(
      R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},)"
      R"( {"role": "user", "content": "again"}, {"role": "assistant", "content": "ok"}]})"
      "\n");
  EXPECT_EQ(Targets(d.examples.at(0)), "yo<|im_end|>ok<|im_end|>");
}

TEST_F(DatasetTest, TextLearnsEverythingAndTrainOnPromptUnmasks) {
  Dataset d = Load("{\"text\": \"hello\"}\n\n");
  EXPECT_EQ(Targets(d.examples.at(0)), "hello<|im_end|>");
  DataConfig all;
  all.train_on_prompt = true;
  Dataset a = Load(R"({"instruction": "x", "output": "y"})"
                   "\n",
                   all);
  EXPECT_EQ(Targets(a.examples.at(0)), tokenizer_->Decode(a.examples[0].ids));
}

TEST_F(DatasetTest, TruncatesOrDropsLongExamples) {
  const std::string lines =
      R"({"instruction": "a", "output": "b"})"
      "\n"
      R"({"instruction": "a very long instruction indeed", "output": "the reply"})"
      "\n";
  DataConfig config;
  config.max_seq_len = 55;  // the long one is 60 tokens, its prompt 49
  Dataset cut = Load(lines, config);
  EXPECT_EQ(cut.stats.truncated, 1);
  ASSERT_EQ(cut.examples.size(), 2u);
  EXPECT_EQ(Targets(cut.examples[1]), "the re");
  config.max_seq_len = 40;  // now the reply is cut off entirely: nothing to learn
  Dataset gone = Load(lines, config);
  EXPECT_EQ(gone.examples.size(), 1u);
  EXPECT_EQ(gone.stats.dropped, 1);
  config.truncation = train::Truncation::kDrop;
  Dataset dropped = Load(lines, config);
  EXPECT_EQ(dropped.examples.size(), 1u);
  EXPECT_EQ(dropped.stats.dropped, 1);
}

TEST_F(DatasetTest, PackingFillsSequencesInOrder) {
  std::string lines;
  for (int i = 0; i < 6; ++i)
    lines += R"({"text": "abcdefgh"})"
             "\n";  // 9 tokens each with EOS
  DataConfig config;
  config.packing = true;
  config.max_seq_len = 20;
  Dataset d = Load(lines, config);
  ASSERT_EQ(d.examples.size(), 3u);
  for (const auto& e : d.examples) EXPECT_EQ(e.ids.size(), 18u);
  EXPECT_EQ(d.stats.tokens, 54);
}

TEST_F(DatasetTest, MalformedLinesNameFileAndLine) {
  const std::string ok = R"({"instruction": "a", "output": "b"})"
                         "\n";
  EXPECT_THAT(ErrorOf(ok + "{not json}\n"), HasSubstr("d.jsonl:2: not valid JSON"));
  EXPECT_THAT(ErrorOf(ok + R"({"instruction": "a"})"
                           "\n"),
              HasSubstr("d.jsonl:2: missing field \"output\""));
  EXPECT_THAT(ErrorOf(ok + R"({"text": "a"})"
                           "\n"),
              HasSubstr("d.jsonl:2: expected a alpaca record, found text"));
  EXPECT_THAT(ErrorOf(R"({"prompt": "a"})"
                      "\n"),
              HasSubstr("d.jsonl:1: cannot tell the format"));
  EXPECT_THAT(ErrorOf(R"({"messages": [{"role": "user", "content": "a"}]})"
                      "\n"),
              HasSubstr("d.jsonl:1: no \"assistant\" message"));
  EXPECT_THAT(ErrorOf(R"({"messages": [{"role": "user"}]})"
                      "\n"),
              HasSubstr("messages[0] must have"));
  EXPECT_THAT(ErrorOf("[1, 2]\n"), HasSubstr("d.jsonl:1: each line must be a JSON object"));
  EXPECT_THAT(ErrorOf("\n\n"), HasSubstr("no usable example"));
}

}  // namespace
}  // namespace diablo::testing
