// `diablo train` as users and the worker agent run it: a real process,
// JSON-lines events on stdout, data parallelism over Gloo with --nproc, and
// a run killed with SIGKILL that resumes from its last checkpoint.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "tests/worker/train/train_test_util.h"
#include "worker/peft/tensor_io.h"

namespace diablo::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

struct Result {
  int code = -1;
  std::vector<json> events;
  std::string stderr_text;
};

// Runs `diablo train <args>` and parses its stdout as JSON lines.
Result RunTrain(const std::string& args, const fs::path& dir) {
  const std::string err = (dir / "stderr.txt").string();
  std::FILE* pipe = ::popen((kDiablo + " train " + args + " 2>" + err).c_str(), "r");
  Result r;
  char line[1 << 16];
  while (pipe != nullptr && std::fgets(line, sizeof line, pipe) != nullptr) {
    json e = json::parse(line, nullptr, false);
    EXPECT_FALSE(e.is_discarded()) << "not a JSON line: " << line;
    if (!e.is_discarded()) r.events.push_back(e);
  }
  int status = ::pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(err);
  r.stderr_text.assign(std::istreambuf_iterator<char>(in), {});
  return r;
}

TEST(TrainCli, EmitsTheEventContractAndWritesTheAdapter) {
  fs::path dir = MakeScratch("cli");
  json doc = TinyConfig(dir);
  doc["optim"]["max_steps"] = 3;
  Result r = RunTrain(WriteConfig(dir, doc, "job.json") + " --set optim.lr=0.001", dir);
  ASSERT_EQ(r.code, 0) << r.stderr_text;
  std::vector<std::string> kinds;
  for (const auto& e : r.events) {
    kinds.push_back(e["event"]);
    EXPECT_TRUE(e.contains("time"));
  }
  EXPECT_THAT(kinds,
              ::testing::ElementsAre("started", "step", "step", "step", "checkpoint", "finished"));
  const json& step = r.events[1];
  for (const char* key :
       {"loss", "lr", "grad_norm", "tokens", "tokens_per_s", "eta_s", "peak_rss_bytes"})
    EXPECT_TRUE(step.contains(key)) << key;
  // --set took effect: two warm-up steps to 1e-3, then the cosine starts at its peak.
  EXPECT_DOUBLE_EQ(r.events[1]["lr"].get<double>(), 0.0005);
  EXPECT_DOUBLE_EQ(r.events[3]["lr"].get<double>(), 0.001);
  EXPECT_TRUE(fs::exists(dir / "out" / "adapter" / "adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "out" / "train_config.json"));
}

TEST(TrainCli, BadConfigExitsOneWithTheFieldNamed) {
  fs::path dir = MakeScratch("clibad");
  json doc = TinyConfig(dir);
  doc["optim"]["lr"] = "fast";
  Result r = RunTrain(WriteConfig(dir, doc, "job.json") + " --events", dir);
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.stderr_text, HasSubstr("optim.lr: must be a number"));
  ASSERT_EQ(r.events.size(), 1u);
  EXPECT_EQ(r.events[0]["event"], "error");
  EXPECT_FALSE(fs::exists(dir / "out"));
}

TEST(TrainCli, TwoGlooRanksTrainLikeOneRankWithTheSameGlobalBatch) {
  fs::path dir = MakeScratch("ddp");
  json doc = TinyConfig(dir);
  doc["optim"]["max_steps"] = 6;
  doc["optim"]["micro_batch"] = 1;
  Result one = RunTrain(WriteConfig(dir, doc, "one.json"), dir);
  ASSERT_EQ(one.code, 0) << one.stderr_text;
  doc["output_dir"] = (dir / "out-2").string();
  Result two = RunTrain(WriteConfig(dir, doc, "two.json") + " --nproc 2", dir);
  ASSERT_EQ(two.code, 0) << two.stderr_text;
  EXPECT_EQ(two.events.at(0)["world_size"], 2);
  auto a = Adapter(dir / "out"), b = Adapter(dir / "out-2");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    EXPECT_TRUE(at::allclose(t, b.at(name), 1e-5, 1e-5))
        << name << " max diff " << (t - b.at(name)).abs().max().item<double>();
  }
  EXPECT_GT(a.begin()->second.abs().sum().item<double>(), 0);  // it did train
}

TEST(TrainCli, AKilledRunResumesFromItsLastCheckpoint) {
  fs::path dir = MakeScratch("kill");
  json doc = TinyConfig(dir);
  doc["optim"]["max_steps"] = 40;
  doc["save_every"] = 3;
  const std::string config = WriteConfig(dir, doc, "job.json");

  // Start, wait for the checkpoint of step 6, SIGKILL.
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::close(out[0]);
    ::execl(kDiablo.c_str(), "diablo", "train", config.c_str(), "--events",
            static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  ::close(out[1]);
  std::FILE* events = ::fdopen(out[0], "r");
  char line[1 << 16];
  int64_t checkpoint_step = 0;
  while (std::fgets(line, sizeof line, events) != nullptr) {
    json e = json::parse(line, nullptr, false);
    if (e.value("event", "") == "checkpoint" && e["step"].get<int64_t>() >= 6) {
      checkpoint_step = e["step"];
      break;
    }
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::fclose(events);
  ASSERT_TRUE(WIFSIGNALED(status));
  ASSERT_GE(checkpoint_step, 6);

  Result resumed = RunTrain(config + " --resume", dir);
  ASSERT_EQ(resumed.code, 0) << resumed.stderr_text;
  const int64_t start = resumed.events.at(0)["start_step"];
  EXPECT_GE(start, checkpoint_step);  // the step counter continues
  EXPECT_EQ(resumed.events.at(1)["step"].get<int64_t>(), start + 1);

  // And ends where an uninterrupted run ends.
  doc["output_dir"] = (dir / "out-straight").string();
  Result straight = RunTrain(WriteConfig(dir, doc, "straight.json"), dir);
  ASSERT_EQ(straight.code, 0);
  auto a = Adapter(dir / "out"), b = Adapter(dir / "out-straight");
  for (const auto& [name, t] : a) EXPECT_TRUE(at::equal(t, b.at(name))) << name;
}

}  // namespace
}  // namespace diablo::testing
