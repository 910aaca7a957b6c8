// The training loop on a tiny random model: it learns, it agrees with full
// fine-tuning where the method says it must, and its checkpoints resume
// exactly.
#include "worker/train/trainer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <filesystem>
#include <limits>
#include <optional>
#include <set>

#include "spec/trainer_events.h"
#include "tests/worker/train/train_test_util.h"
#include "worker/peft/tensor_io.h"
#include "worker/train/checkpoint.h"

namespace diablo::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

int Train(const json& doc, RecordingSink& sink, train::RunOptions options = {}) {
  return train::RunTraining(Parse(doc), options, sink);
}

TEST(Trainer, LossFallsOnALearnableTask) {
  fs::path dir = MakeScratch("loss");
  json doc = TinyConfig(dir);
  doc["optim"]["max_steps"] = 40;
  RecordingSink sink;
  ASSERT_EQ(Train(doc, sink), 0) << sink.events.back().dump();
  auto steps = sink.Of("step");
  ASSERT_EQ(steps.size(), 40u);
  double first = (steps[0]["loss"].get<double>() + steps[1]["loss"].get<double>()) / 2;
  double last = (steps[38]["loss"].get<double>() + steps[39]["loss"].get<double>()) / 2;
  EXPECT_LT(last, first * 0.6) << "first " << first << " last " << last;
  auto started = sink.Of("started").at(0);
  // 2 layers x (q [32->32]: 4 blocks of 8x8, v [32->16]: 4 of 8x4, up [32->48]: 4 of 8x12,
  // down [48->32]: 4 of 12x8).
  EXPECT_EQ(started["trainable_parameters"].get<int64_t>(), 2 * (256 + 128 + 384 + 384));
  EXPECT_TRUE(fs::exists(dir / "out" / "adapter" / "adapter_config.json"));
  EXPECT_EQ(sink.Of("finished").size(), 1u);
}

TEST(Trainer, DiaBloWithOneBlockMakesTheSameFirstUpdateAsFullFineTuning) {
  fs::path dir = MakeScratch("full");
  json doc = TinyConfig(dir);
  doc["optim"]["max_steps"] = 1;
  doc["optim"]["max_grad_norm"] = 0;  // clipping would see different norms
  doc["optim"]["warmup_steps"] = 0;
  doc["optim"]["scheduler"] = "constant";
  doc["optim"]["lr"] = 1e-3;
  doc["method"]["blocks"] = 1;
  doc["method"]["target_modules"] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                     "gate_proj", "up_proj", "down_proj"};
  RecordingSink diablo_sink;
  ASSERT_EQ(Train(doc, diablo_sink), 0) << diablo_sink.events.back().dump();
  auto adapter = Adapter(dir / "out");

  json full = doc;
  full["method"] = {{"name", "full"}};
  full["output_dir"] = (dir / "out-full").string();
  RecordingSink full_sink;
  ASSERT_EQ(Train(full, full_sink), 0) << full_sink.events.back().dump();
  auto before = peft::LoadSafetensors((dir / "model" / "model.safetensors").string());
  auto after = peft::LoadSafetensors((dir / "out-full" / "model.safetensors").string());

  int compared = 0;
  for (const auto& [name, a] : adapter) {
    // "model.layers.0.self_attn.q_proj.block_A" [1, in, out]
    std::string weight = name.substr(0, name.size() - std::string("block_A").size()) + "weight";
    at::Tensor delta = after.at(weight) - before.at(weight);  // [out, in]
    EXPECT_TRUE(at::allclose(delta, a[0].t(), 1e-6, 1e-7)) << name;
    ++compared;
  }
  EXPECT_EQ(compared, 14);
}

TEST(Trainer, ResumeContinuesExactly) {
  fs::path dir = MakeScratch("resume");
  json doc = TinyConfig(dir);
  doc["method"]["dropout"] = 0.1;  // the RNG must resume too
  RecordingSink straight;
  ASSERT_EQ(Train(doc, straight), 0);
  auto expected = Adapter(dir / "out");

  doc["output_dir"] = (dir / "out-split").string();
  RecordingSink first, second;
  train::RunOptions stop;
  stop.stop_after_steps = 10;
  ASSERT_EQ(Train(doc, first, stop), 0);
  ASSERT_EQ(first.Of("stopped").size(), 1u);
  train::RunOptions resume;
  resume.resume = true;
  ASSERT_EQ(Train(doc, second, resume), 0) << second.events.back().dump();
  EXPECT_EQ(second.Of("started").at(0)["start_step"].get<int64_t>(), 10);
  EXPECT_EQ(second.Of("step").size(), 10u);
  auto resumed = Adapter(dir / "out-split");
  ASSERT_EQ(resumed.size(), expected.size());
  for (const auto& [name, t] : expected) EXPECT_TRUE(at::equal(t, resumed.at(name))) << name;
  // The losses of steps 11..20 are the same numbers too.
  auto a = straight.Of("step"), b = second.Of("step");
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(a[10 + i]["loss"], b[i]["loss"]);
}

TEST(Trainer, GradientCheckpointingGivesTheSameTraining) {
  fs::path dir = MakeScratch("ckpt");
  json doc = TinyConfig(dir);
  doc["optim"]["max_steps"] = 5;
  doc["method"]["dropout"] = 0.2;
  RecordingSink plain;
  ASSERT_EQ(Train(doc, plain), 0);
  auto expected = Adapter(dir / "out");
  doc["gradient_checkpointing"] = true;
  doc["output_dir"] = (dir / "out-gc").string();
  RecordingSink checkpointed;
  ASSERT_EQ(Train(doc, checkpointed), 0) << checkpointed.events.back().dump();
  auto got = Adapter(dir / "out-gc");
  for (const auto& [name, t] : expected)
    EXPECT_TRUE(at::allclose(t, got.at(name), 1e-5, 1e-6)) << name;
}

TEST(Trainer, CheckpointsKeepTheNewestK) {
  fs::path dir = MakeScratch("keep");
  json doc = TinyConfig(dir);
  doc["optim"]["max_steps"] = 10;
  doc["save_every"] = 2;
  doc["keep_checkpoints"] = 2;
  RecordingSink sink;
  ASSERT_EQ(Train(doc, sink), 0);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "out" / "checkpoints"))
    names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step-00000008", "step-00000010"}));
  EXPECT_EQ(sink.Of("checkpoint").size(), 5u);
}

TEST(Trainer, DivergingLossStopsWithAnErrorAndKeepsTheLastCheckpoint) {
  fs::path dir = MakeScratch("nan");
  json doc = TinyConfig(dir);
  doc["optim"]["lr"] = 9.0;  // AdamW moves every weight by ~lr per step
  doc["optim"]["scheduler"] = "constant";
  doc["optim"]["warmup_steps"] = 0;
  doc["optim"]["max_steps"] = 200;
  doc["save_every"] = 1;
  doc["method"]["name"] = "full";
  RecordingSink sink;
  int code = Train(doc, sink);
  ASSERT_EQ(code, train::kExitNonFinite) << sink.events.back().dump();
  auto error = sink.Of("error").at(0);
  EXPECT_EQ(error["code"], "non_finite");
  EXPECT_NE(error["message"].get<std::string>().find("lr"), std::string::npos);
  EXPECT_FALSE(train::LatestCheckpoint((dir / "out").string()).empty());
}

TEST(Trainer, ACheckpointWithAWeightThatIsNotFiniteIsNeverPublished) {
  fs::path dir = MakeScratch("nonfinite");
  train::TrainConfig config = Parse(TinyConfig(dir));
  config.method.name = train::TrainMethod::kFull;
  torch::nn::Linear layer(4, 4);
  torch::optim::AdamW optimizer(layer->parameters(), torch::optim::AdamWOptions(1e-3));
  const std::string out = (dir / "out").string();
  train::TrainerState state;
  state.step = 1;
  const std::string good = train::SaveCheckpoint(out, config, *layer, optimizer, state, 3);
  ASSERT_EQ(train::LatestCheckpoint(out), good);

  for (float poison :
       {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    SCOPED_TRACE(poison);
    {
      torch::NoGradGuard no_grad;
      layer->weight[1][2].fill_(poison);
    }
    state.step += 1;
    try {
      train::SaveCheckpoint(out, config, *layer, optimizer, state, 3);
      ADD_FAILURE() << "a checkpoint with a non-finite weight was written";
    } catch (const std::domain_error& e) {
      EXPECT_NE(std::string(e.what()).find("weight"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("is not finite at step " + std::to_string(state.step)),
                std::string::npos)
          << e.what();
    }
    EXPECT_EQ(train::LatestCheckpoint(out), good) << "the last good checkpoint stays latest";
    const fs::path root = train::CheckpointsDir(out);
    EXPECT_FALSE(fs::exists(root / train::CheckpointName(state.step)));
    EXPECT_FALSE(fs::exists(root / (train::CheckpointName(state.step) + ".tmp")))
        << "nothing half-written is left";
  }
}

// The other half of tests/server/trainer_events_test.cc: every event the
// trainer writes is of spec/trainer_events.h, with each field its readers
// (the agent, the scheduler) rely on, of the documented type.
TEST(Trainer, EveryEventItWritesIsOfTheContract) {
  fs::path dir = MakeScratch("contract");
  json doc = TinyConfig(dir);
  doc["optim"]["max_steps"] = 6;
  doc["data"]["eval"] = (dir / "train.jsonl").string();
  doc["eval_every"] = 2;
  doc["save_every"] = 2;
  doc["log_every"] = 1;
  RecordingSink sink;
  train::RunOptions stop;
  stop.stop_after_steps = 3;
  ASSERT_EQ(Train(doc, sink, stop), 0) << sink.events.back().dump();
  train::RunOptions resume;
  resume.resume = true;
  ASSERT_EQ(Train(doc, sink, resume), 0) << sink.events.back().dump();
  doc["output_dir"] = (dir / "out-diverging").string();
  doc["optim"]["lr"] = 9.0;  // diverges, as in the test above
  doc["optim"]["scheduler"] = "constant";
  doc["optim"]["warmup_steps"] = 0;
  doc["optim"]["max_steps"] = 200;
  doc["method"]["name"] = "full";
  ASSERT_EQ(Train(doc, sink), train::kExitNonFinite);

  std::set<events::Kind> seen;
  for (const json& event : sink.events) {
    SCOPED_TRACE(event.dump());
    ASSERT_TRUE(event.contains(events::field::kEvent));
    const std::optional<events::Kind> kind =
        events::ParseKind(event[events::field::kEvent].get<std::string>());
    ASSERT_TRUE(kind.has_value()) << "an event kind outside the contract";
    seen.insert(*kind);
    for (const events::Field& f : events::RequiredFields(*kind)) {
      ASSERT_TRUE(event.contains(f.name)) << "missing " << f.name;
      const json& value = event[f.name];
      switch (f.type) {
        case events::Type::kInteger:
          EXPECT_TRUE(value.is_number_integer()) << f.name;
          break;
        case events::Type::kNumber:  // null stands for NaN/Inf
          EXPECT_TRUE(value.is_number() || value.is_null()) << f.name;
          break;
        case events::Type::kString:
          EXPECT_TRUE(value.is_string()) << f.name;
          break;
        case events::Type::kBoolean:
          EXPECT_TRUE(value.is_boolean()) << f.name;
          break;
      }
    }
    if (kind == events::Kind::kError) {
      const std::string code = event[events::field::kCode].get<std::string>();
      EXPECT_EQ(events::ErrorCodeName(events::ParseErrorCode(code)), code)
          << "an error code outside the contract";
    }
  }
  for (events::Kind kind : events::kAllKinds)
    EXPECT_TRUE(seen.count(kind)) << "no " << events::KindName(kind) << " event was written";
}

TEST(Trainer, InitAdapterStartsANewRunFromExistingWeights) {
  fs::path dir = MakeScratch("init");
  json doc = TinyConfig(dir);
  doc["optim"]["max_steps"] = 5;
  RecordingSink first;
  ASSERT_EQ(Train(doc, first), 0);
  auto trained = Adapter(dir / "out");

  json next = doc;
  next["init_adapter"] = (dir / "out" / "adapter").string();
  next["output_dir"] = (dir / "out-next").string();
  next["optim"]["lr"] = 0.0;  // nothing moves: the output is the adapter it started from
  RecordingSink second;
  ASSERT_EQ(Train(next, second), 0) << second.events.back().dump();
  EXPECT_EQ(second.Of("started").at(0)["start_step"], 0);  // a new run, not a resume
  auto loaded = Adapter(dir / "out-next");
  for (const auto& [name, t] : trained) EXPECT_TRUE(at::equal(t, loaded.at(name))) << name;

  next["method"]["blocks"] = 2;  // another shape: refused with the module named
  next["output_dir"] = (dir / "out-bad").string();
  RecordingSink bad;
  EXPECT_EQ(Train(next, bad), train::kExitError);
  EXPECT_NE(bad.events.back()["message"].get<std::string>().find("does not fit this model"),
            std::string::npos)
      << bad.events.back().dump();
}

TEST(Trainer, BadDataIsReportedBeforeTraining) {
  fs::path dir = MakeScratch("baddata");
  json doc = TinyConfig(dir);
  std::ofstream(dir / "bad.jsonl") << R"({"instruction": "a", "output": "b"})"
                                   << "\n"
                                   << R"({"instruction": "a", "output": 3})"
                                   << "\n";
  doc["data"]["train"] = (dir / "bad.jsonl").string();
  RecordingSink sink;
  EXPECT_EQ(Train(doc, sink), train::kExitError);
  ASSERT_EQ(sink.events.size(), 1u);
  EXPECT_NE(sink.events[0]["message"].get<std::string>().find("bad.jsonl:2:"), std::string::npos)
      << sink.events[0].dump();
  EXPECT_EQ(sink.events[0]["code"], "bad_config") << "no retry can fix the data: it is permanent";
  EXPECT_FALSE(fs::exists(dir / "out"));
}

}  // namespace
}  // namespace diablo::testing
