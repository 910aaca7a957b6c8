// A memory cap given to Process::Start reaches the child as its RLIMIT_DATA,
// and an allocation beyond it fails inside the child, which can report it,
// instead of the child being killed: real processes, so `integration`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <filesystem>
#include <string>
#include <thread>

#include "worker/agent/process.h"

namespace diablo::agent {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMiB = int64_t{1} << 20;

struct Finished {
  int exit_code = 0;
  std::string out, err;
};

Finished RunToExit(const std::vector<std::string>& argv, int64_t memory_cap_bytes) {
  absl::StatusOr<Process> process =
      Process::Start(argv, {{"PATH", "/usr/bin:/bin"}}, "", memory_cap_bytes);
  EXPECT_TRUE(process.ok()) << process.status();
  Finished finished;
  if (!process.ok()) return finished;
  std::thread err_reader([&] {
    LineReader reader(process->stderr_fd());
    std::string line;
    while (reader.Next(&line)) finished.err += line + "\n";
  });
  LineReader reader(process->stdout_fd());
  std::string line;
  while (reader.Next(&line)) finished.out += line + "\n";
  err_reader.join();
  finished.exit_code = process->Wait();
  return finished;
}

TEST(ProcessMemoryCapTest, TheCapIsTheChildsSoftAndHardDataLimit) {
  // `ulimit -d` / `ulimit -Hd`: KiB.
  const Finished capped = RunToExit({"/bin/sh", "-c", "ulimit -d; ulimit -Hd"}, 300 * kMiB);
  EXPECT_EQ(capped.exit_code, 0) << capped.err;
  EXPECT_EQ(capped.out, "307200\n307200\n") << "soft and hard, so the trainer cannot lift it";

  struct rlimit own = {};
  ASSERT_EQ(getrlimit(RLIMIT_DATA, &own), 0);
  const Finished uncapped = RunToExit({"/bin/sh", "-c", "ulimit -d"}, 0);
  EXPECT_EQ(uncapped.out, own.rlim_cur == RLIM_INFINITY
                              ? "unlimited\n"
                              : std::to_string(own.rlim_cur / 1024) + "\n")
      << "without a cap the child keeps the agent's limit";
}

TEST(ProcessMemoryCapTest, AnAllocationBeyondTheCapFailsInTheChildWhichReportsIt) {
  if (!std::filesystem::exists("/usr/bin/python3")) GTEST_SKIP() << "needs /usr/bin/python3";
  // Half a GiB, touched: more than the cap, far less than any test machine.
  const std::vector<std::string> allocate = {"/usr/bin/python3", "-c",
                                             "import sys\n"
                                             "try:\n"
                                             "    block = bytearray(512 << 20)\n"
                                             "except MemoryError:\n"
                                             "    print('MemoryError'); sys.exit(3)\n"
                                             "print('allocated', len(block))\n"};
  const Finished capped = RunToExit(allocate, 256 * kMiB);
  EXPECT_EQ(capped.exit_code, 3) << "not killed by a signal: " << capped.err;
  EXPECT_EQ(capped.out, "MemoryError\n");

  const Finished uncapped = RunToExit(allocate, 0);
  EXPECT_EQ(uncapped.exit_code, 0) << uncapped.err;
  EXPECT_THAT(uncapped.out, HasSubstr("allocated 536870912"));
}

}  // namespace
}  // namespace diablo::agent
