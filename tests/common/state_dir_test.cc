// The default runtime-data directory: absolute, per user, never the
// working directory.
#include "common/state_dir.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <optional>
#include <string>

namespace diablo {
namespace {

// Sets (or, with nullopt, unsets) an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      setenv(name, value->c_str(), 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(DefaultStateDir, UsesXdgStateHomeWhenItIsAbsolute) {
  ScopedEnv state("XDG_STATE_HOME", "/srv/state/");
  ScopedEnv home("HOME", "/home/alice");
  auto dir = DefaultStateDir("scheduler");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, "/srv/state/diablo/scheduler");
}

TEST(DefaultStateDir, FallsBackToTheHomeDirectory) {
  ScopedEnv state("XDG_STATE_HOME", std::nullopt);
  ScopedEnv home("HOME", "/home/alice");
  auto dir = DefaultStateDir("worker");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, "/home/alice/.local/state/diablo/worker");
}

TEST(DefaultStateDir, IgnoresRelativeValuesRatherThanWritingBesideTheCaller) {
  ScopedEnv state("XDG_STATE_HOME", "state");
  ScopedEnv home("HOME", "/home/alice");
  auto dir = DefaultStateDir("worker");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, "/home/alice/.local/state/diablo/worker");
}

TEST(DefaultStateDir, WithoutAnyHomeItIsAnErrorNotTheWorkingDirectory) {
  ScopedEnv state("XDG_STATE_HOME", std::nullopt);
  ScopedEnv home("HOME", "");
  auto dir = DefaultStateDir("scheduler");
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace diablo
