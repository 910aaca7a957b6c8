// diablo eval's pieces: answer comparison, record reading, and the loss and
// choice scores against a direct computation from the model's full logits.
#include "worker/train/evaluation.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/worker/train/train_test_util.h"
#include "text/tokenizer.h"
#include "worker/model/load_model.h"

namespace diablo::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using train::FinalNumber;
using train::NormalizeAnswer;

TEST(EvalAnswers, NormalizeAndFinalNumber) {
  EXPECT_EQ(NormalizeAnswer("  15/03/2024.\nmore text"), "15/03/2024");
  EXPECT_EQ(NormalizeAnswer("Positive"), "positive");
  EXPECT_EQ(FinalNumber("She has 3 apples, then 1,234.50 more"), "1234.5");
  EXPECT_EQ(FinalNumber("so 5 + 7 = 12\n#### 12"), "12");
  EXPECT_EQ(FinalNumber("#### -3"), "-3");
  EXPECT_EQ(FinalNumber("no digits"), "");
}

// log p(text after `prompt_len` tokens) summed, from the full logits.
double DirectLogProb(model::LlamaForCausalLMImpl& m, const std::vector<int32_t>& ids,
                     size_t prompt_len) {
  std::vector<int64_t> wide(ids.begin(), ids.end());
  at::Tensor logp = at::log_softmax(m.forward(at::tensor(wide).unsqueeze(0))[0], -1);
  double total = 0;
  for (size_t t = prompt_len; t < ids.size(); ++t)
    total += logp[static_cast<int64_t>(t) - 1][ids[t]].item<double>();
  return total;
}

class EvalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeScratch("eval");
    WriteTinyLlm(dir_ / "model", {.seed = 5});
    loaded_ = model::LoadModel((dir_ / "model").string());
    tokenizer_ = model::LoadTokenizer((dir_ / "model").string());
  }
  train::EvalResult Run(const std::string& lines, train::EvalTask task) {
    std::ofstream(dir_ / "e.jsonl") << lines;
    auto chat = model::ChatTemplate::FromName("chatml", model::TemplateTokensOf(*tokenizer_));
    train::EvalOptions options;
    options.task = task;
    options.batch = 2;
    options.max_new_tokens = 4;
    return train::Evaluate(*loaded_.model, *tokenizer_, chat, (dir_ / "e.jsonl").string(), {},
                           options, {});
  }
  fs::path dir_;
  model::LoadedModel loaded_;
  std::unique_ptr<model::Tokenizer> tokenizer_;
};

TEST_F(EvalTest, LossIsTheMeanNegativeLogLikelihoodOfTheAnswers) {
  train::EvalResult r = Run(R"({"instruction": "copy", "input": "ab", "output": "ab!"})"
                            "\n"
                            R"({"instruction": "say", "output": "hello"})"
                            "\n",
                            train::EvalTask::kLoss);
  auto chat = model::ChatTemplate::FromName("chatml", model::TemplateTokensOf(*tokenizer_));
  double nll = 0;
  int64_t count = 0;
  for (auto [instruction, input, output] :
       {std::tuple{"copy", "ab", "ab!"}, std::tuple{"say", "", "hello"}}) {
    std::string prompt = chat.RenderInstruction(instruction, input, "").text;
    std::string full = chat.RenderInstruction(instruction, input, output).text;
    // The answer and its end-of-turn marker are the targets; the newline after it is not.
    std::string answer_text =
        full.substr(0, full.rfind("<|im_end|>") + std::string("<|im_end|>").size());
    std::vector<int32_t> ids = tokenizer_->Encode(answer_text, false);
    const size_t prompt_len = tokenizer_->Encode(prompt, false).size();
    at::NoGradGuard no_grad;
    nll -= DirectLogProb(*loaded_.model, ids, prompt_len);
    count += static_cast<int64_t>(ids.size() - prompt_len);
  }
  EXPECT_EQ(r.label_tokens, count);
  EXPECT_NEAR(r.loss, nll / static_cast<double>(count), 1e-4);
  EXPECT_NEAR(r.perplexity, std::exp(r.loss), 1e-9);
}

TEST_F(EvalTest, ChoicePicksTheMostLikelyOption) {
  auto chat = model::ChatTemplate::FromName("chatml", model::TemplateTokensOf(*tokenizer_));
  std::string prompt = chat.RenderInstruction("pick", "", "").text;
  const std::vector<std::string> options = {"xq", "ab", "zzz"};
  std::vector<double> scores;
  at::NoGradGuard no_grad;
  for (const auto& o : options) {
    auto ids = tokenizer_->Encode(prompt, false);
    auto more = tokenizer_->Encode(o, false);
    const size_t p = ids.size();
    ids.insert(ids.end(), more.begin(), more.end());
    scores.push_back(DirectLogProb(*loaded_.model, ids, p));
  }
  const auto best = std::max_element(scores.begin(), scores.end()) - scores.begin();
  const auto worst = std::min_element(scores.begin(), scores.end()) - scores.begin();
  auto line = [&](int64_t answer) {
    return nlohmann::json{{"instruction", "pick"}, {"choices", options}, {"answer", answer}}
               .dump() +
           "\n";
  };
  train::EvalResult r = Run(line(best) + line(worst), train::EvalTask::kChoice);
  ASSERT_EQ(r.outcomes.size(), 2u);
  EXPECT_TRUE(r.outcomes[0].correct);
  EXPECT_FALSE(r.outcomes[1].correct);
  EXPECT_EQ(r.outcomes[1].prediction, options[static_cast<size_t>(best)]);
  EXPECT_DOUBLE_EQ(r.accuracy, 0.5);
}

TEST_F(EvalTest, GeneratedAnswersAreComparedToTheReference) {
  train::EvalResult r = Run(
      R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "4"}]})"
      "\n",
      train::EvalTask::kExact);
  ASSERT_EQ(r.outcomes.size(), 1u);
  EXPECT_EQ(r.outcomes[0].reference, "4");
  EXPECT_EQ(r.outcomes[0].correct, NormalizeAnswer(r.outcomes[0].prediction) == "4");
  EXPECT_THAT(r.outcomes[0].prompt, ::testing::EndsWith("<|im_start|>assistant\n"));
}

TEST_F(EvalTest, MalformedRecordsNameTheLine) {
  EXPECT_THAT(
      [&] {
        Run(R"({"instruction": "a", "output": "b"})"
            "\n"
            R"({"instruction": "a"})"
            "\n",
            train::EvalTask::kExact);
      },
      ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("e.jsonl:2: no reference answer")));
  EXPECT_THAT(
      [&] {
        Run(R"({"instruction": "a", "choices": ["x"], "answer": 0})"
            "\n",
            train::EvalTask::kChoice);
      },
      ::testing::ThrowsMessage<std::invalid_argument>(
          HasSubstr("e.jsonl:1: the choice task needs")));
  EXPECT_THAT(
      [&] {
        Run(R"({"instruction": "a", "choices": ["x", "y"], "answer": "z"})"
            "\n",
            train::EvalTask::kChoice);
      },
      ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("\"answer\" must be")));
}

}  // namespace
}  // namespace diablo::testing
