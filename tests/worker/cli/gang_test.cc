// Several ranks of `diablo train` as one gang, over Gloo on this CPU: a
// signal to one rank stops every rank at the same step; a rank that stops
// answering (SIGSTOP) fails the gang within collective_timeout_s instead of
// hanging it; each resumes with its step counter continuing; and ranks that
// share no file system resume from the checkpoint only rank 0 wrote.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>

#include "tests/worker/train/train_test_util.h"
#include "worker/peft/tensor_io.h"

namespace diablo::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

// A `diablo train ... --events` process whose stdout is read event by event.
class TrainProcess {
 public:
  explicit TrainProcess(std::vector<std::string> args,
                        std::vector<std::pair<std::string, std::string>> env = {}) {
    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> argv{const_cast<char*>("diablo"), const_cast<char*>("train")};
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(kDiablo.c_str(), argv.data());
      std::_Exit(127);
    }
    ::close(out[1]);
    events_ = ::fdopen(out[0], "r");
  }
  ~TrainProcess() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      Wait();
    }
    if (events_ != nullptr) std::fclose(events_);
  }

  // Reads events until `until` accepts one (true) or stdout ends (false).
  bool ReadUntil(const std::function<bool(const json&)>& until) {
    char line[1 << 16];
    while (std::fgets(line, sizeof line, events_) != nullptr) {
      json e = json::parse(line, nullptr, false);
      if (e.is_discarded()) continue;
      events.push_back(e);
      if (until(e)) return true;
    }
    return false;
  }
  int Wait() {
    ReadUntil([](const json&) { return false; });
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // The rank processes the launcher (--nproc) started, in rank order.
  std::vector<pid_t> Ranks() const {
    std::vector<std::pair<int, pid_t>> ranks;
    for (const auto& entry : fs::directory_iterator("/proc")) {
      const std::string name = entry.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream stat(entry.path() / "stat");
      std::string text((std::istreambuf_iterator<char>(stat)), {});
      const size_t close = text.rfind(')');
      if (close == std::string::npos) continue;
      char state = 0;
      int ppid = 0;
      if (std::sscanf(text.c_str() + close + 1, " %c %d", &state, &ppid) != 2 || ppid != pid_)
        continue;
      std::ifstream environ(entry.path() / "environ");
      std::string env((std::istreambuf_iterator<char>(environ)), {});
      const size_t at = env.find(std::string("\0RANK=", 6));
      if (at != std::string::npos)
        ranks.emplace_back(std::atoi(env.c_str() + at + 6), std::stoi(name));
    }
    std::sort(ranks.begin(), ranks.end());
    std::vector<pid_t> pids;
    for (const auto& [rank, pid] : ranks) pids.push_back(pid);
    return pids;
  }
  std::vector<json> Of(const std::string& kind) const {
    std::vector<json> out;
    for (const json& e : events)
      if (e.value("event", "") == kind) out.push_back(e);
    return out;
  }

  std::vector<json> events;

 private:
  pid_t pid_ = -1;
  std::FILE* events_ = nullptr;
  bool reaped_ = false;
};

json GangConfig(const fs::path& dir) {
  json doc = TinyConfig(dir);
  doc["optim"]["max_steps"] = 400;  // long enough to signal it mid-run
  doc["optim"]["micro_batch"] = 1;
  doc["collective_timeout_s"] = 4;
  return doc;
}

bool IsStepAtLeast(const json& e, int64_t step) {
  return e.value("event", "") == "step" && e["step"].get<int64_t>() >= step;
}

TEST(Gang, ASigtermToOneRankStopsEveryRankAtTheSameStepAndTheRunResumes) {
  fs::path dir = MakeScratch("gang-term");
  const std::string config = WriteConfig(dir, GangConfig(dir), "job.json");
  int64_t stopped_at = 0;
  {
    TrainProcess run({config, "--events", "--nproc", "2"});
    ASSERT_TRUE(run.ReadUntil([](const json& e) { return IsStepAtLeast(e, 3); }));
    const std::vector<pid_t> ranks = run.Ranks();
    ASSERT_EQ(ranks.size(), 2u);
    // Rank 1 reports nothing itself: only the agreement can stop rank 0.
    ::kill(ranks[1], SIGTERM);
    EXPECT_EQ(run.Wait(), 5);
    const auto errors = run.Of("error");
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_EQ(errors[0]["code"], "interrupted");
    EXPECT_THAT(errors[0]["message"].get<std::string>(), HasSubstr("every rank stopped there"));
    stopped_at = run.Of("step").back()["step"].get<int64_t>();
    EXPECT_LT(stopped_at, 400);
    ASSERT_EQ(run.Of("checkpoint").size(), 1u);
    EXPECT_EQ(run.Of("checkpoint")[0]["step"].get<int64_t>(), stopped_at);
  }
  // Resume for a few more steps only: the counter continues from the stop.
  TrainProcess resumed({config, "--events", "--nproc", "2", "--resume", "--stop-after", "3"});
  EXPECT_EQ(resumed.Wait(), 0);
  ASSERT_FALSE(resumed.Of("started").empty());
  EXPECT_EQ(resumed.Of("started")[0]["start_step"].get<int64_t>(), stopped_at);
  ASSERT_EQ(resumed.Of("step").size(), 3u);
  EXPECT_EQ(resumed.Of("step")[0]["step"].get<int64_t>(), stopped_at + 1);
}

TEST(Gang, ARankThatStopsAnsweringFailsTheGangWithinTheTimeoutAndTheRunResumes) {
  fs::path dir = MakeScratch("gang-stop");
  json doc = GangConfig(dir);
  doc["save_every"] = 2;
  const std::string config = WriteConfig(dir, doc, "job.json");
  int64_t last_checkpoint = 0;
  {
    TrainProcess run({config, "--events", "--nproc", "2"});
    ASSERT_TRUE(run.ReadUntil([](const json& e) {
      return e.value("event", "") == "checkpoint" && e["step"].get<int64_t>() >= 4;
    }));
    const std::vector<pid_t> ranks = run.Ranks();
    ASSERT_EQ(ranks.size(), 2u);
    const auto stopped = std::chrono::steady_clock::now();
    ::kill(ranks[1], SIGSTOP);
    const int code = run.Wait();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
    EXPECT_EQ(code, 1);
    // collective_timeout_s (4) for rank 0 to give up, then the launcher's
    // grace (10 s) before it kills the stopped rank; never the 5 minutes of
    // the default timeout, nor a hang.
    EXPECT_LT(seconds, 4 + 10 + 15) << "the gang took too long to fail";
    const auto errors = run.Of("error");
    ASSERT_FALSE(errors.empty());
    EXPECT_EQ(errors.back()["code"], "failed");
    EXPECT_THAT(errors.back()["message"].get<std::string>(), HasSubstr("collective_timeout_s"));
    EXPECT_EQ(::kill(ranks[1], 0), -1) << "the stopped rank is still alive";
    last_checkpoint = run.Of("checkpoint").back()["step"].get<int64_t>();
  }
  TrainProcess resumed({config, "--events", "--nproc", "2", "--resume", "--stop-after", "2"});
  EXPECT_EQ(resumed.Wait(), 0);
  ASSERT_FALSE(resumed.Of("started").empty());
  EXPECT_EQ(resumed.Of("started")[0]["start_step"].get<int64_t>(), last_checkpoint);
  ASSERT_FALSE(resumed.Of("step").empty());
  EXPECT_EQ(resumed.Of("step")[0]["step"].get<int64_t>(), last_checkpoint + 1);
}

// Two "nodes": each rank has its own output_dir, as on machines that share
// no file system, so only rank 0's holds the checkpoints.  Resumed, rank 1
// receives the checkpoint from rank 0 and the run ends exactly where the
// uninterrupted run on one file system ends.
TEST(Gang, RanksWithoutASharedFileSystemResumeFromRankZerosCheckpoint) {
  fs::path dir = MakeScratch("gang-nodes");
  json doc = TinyConfig(dir);
  doc["optim"]["max_steps"] = 6;
  doc["optim"]["micro_batch"] = 1;
  doc["output_dir"] = (dir / "straight").string();
  {
    TrainProcess straight({WriteConfig(dir, doc, "straight.json"), "--events", "--nproc", "2"});
    ASSERT_EQ(straight.Wait(), 0);
  }
  auto run_gang = [&](const std::vector<std::string>& extra) {
    const std::string port = std::to_string(29700 + ::getpid() % 200);
    std::vector<std::unique_ptr<TrainProcess>> ranks;
    for (int rank = 0; rank < 2; ++rank) {
      json node = doc;
      node["output_dir"] = (dir / ("node" + std::to_string(rank))).string();
      std::vector<std::string> args = {
          WriteConfig(dir, node, "node" + std::to_string(rank) + ".json"), "--events"};
      args.insert(args.end(), extra.begin(), extra.end());
      ranks.push_back(std::make_unique<TrainProcess>(
          args, std::vector<std::pair<std::string, std::string>>{{"RANK", std::to_string(rank)},
                                                                 {"LOCAL_RANK", "0"},
                                                                 {"WORLD_SIZE", "2"},
                                                                 {"MASTER_ADDR", "127.0.0.1"},
                                                                 {"MASTER_PORT", port}}));
    }
    for (auto& r : ranks) EXPECT_EQ(r->Wait(), 0);
    return std::move(ranks[0]->events);
  };
  run_gang({"--stop-after", "3"});
  ASSERT_TRUE(fs::exists(dir / "node0" / "checkpoints" / "step-00000003"));
  ASSERT_FALSE(fs::exists(dir / "node1" / "checkpoints"));

  const std::vector<json> resumed = run_gang({"--resume"});
  ASSERT_FALSE(resumed.empty());
  EXPECT_EQ(resumed[0]["start_step"].get<int64_t>(), 3);
  EXPECT_TRUE(fs::exists(dir / "node1" / "checkpoints" / "step-00000003" / "optimizer.pt"));
  for (const auto& entry : fs::directory_iterator(dir / "node0" / "checkpoints" / "step-00000003"))
    EXPECT_EQ(fs::file_size(entry.path()), fs::file_size(dir / "node1" / "checkpoints" /
                                                         "step-00000003" / entry.path().filename()))
        << entry.path().filename();
  auto a = Adapter(dir / "straight"), b = Adapter(dir / "node0");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(at::allclose(t, b.at(name), 1e-6, 1e-7)) << name;
}

}  // namespace
}  // namespace diablo::testing
