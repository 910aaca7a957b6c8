// GangStopPolicy: which exits stop the other ranks, and the SIGKILL after the
// grace.  The supervisors around it are tested with real processes in
// tests/worker/cli/gang_test.cc and tests/worker/agent/attempt_runner_test.cc.
#include "spec/gang_stop_policy.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace diablo::events {
namespace {

using std::chrono::milliseconds;

TEST(GangStopPolicy, SuccessAndInterruptionStopNobody) {
  GangStopPolicy gang(3, milliseconds(0));
  EXPECT_FALSE(gang.Exited(0, 0));
  EXPECT_FALSE(gang.Exited(1, kInterruptedExitCode));
  EXPECT_FALSE(gang.KillDue());
  EXPECT_EQ(gang.remaining(), 1u);
  EXPECT_FALSE(gang.running(0));
  EXPECT_TRUE(gang.running(2));
}

TEST(GangStopPolicy, TheFirstFailureStopsTheOthersThenKillsThemOnceAfterTheGrace) {
  GangStopPolicy gang(3, milliseconds(50));
  EXPECT_TRUE(gang.Exited(1, 1)) << "the first failure sends SIGTERM";
  EXPECT_FALSE(gang.Exited(2, -9)) << "a later failure sends nothing more";
  EXPECT_FALSE(gang.KillDue()) << "not before the grace";
  std::this_thread::sleep_for(milliseconds(60));
  EXPECT_TRUE(gang.KillDue());
  EXPECT_FALSE(gang.KillDue()) << "SIGKILL once";
  EXPECT_EQ(gang.remaining(), 1u);
}

TEST(GangStopPolicy, AFailureAfterAnInterruptionStillStopsTheOthers) {
  GangStopPolicy gang(3, milliseconds(0));
  EXPECT_FALSE(gang.Exited(0, kInterruptedExitCode));
  EXPECT_TRUE(gang.Exited(1, 128 + 9));
}

TEST(GangStopPolicy, KilledRanksFailInEitherConvention) {
  EXPECT_TRUE(FailsGang(-9));
  EXPECT_TRUE(FailsGang(128 + 15));
  EXPECT_FALSE(FailsGang(0));
  EXPECT_FALSE(FailsGang(kInterruptedExitCode));
}

}  // namespace
}  // namespace diablo::events
