// Regression: libtorch.so exports a partial copy of std::filesystem whose
// create_directories / remove_all jump to address 0.  Every binary that links
// LibTorch must bind these to libstdc++ (cmake/DiabloCompilerFlags.cmake).
#include <ATen/ATen.h>

#include <filesystem>

#include "gtest/gtest.h"

TEST(LibTorchFilesystem, CreateAndRemoveDirectoriesWorkInABinaryLinkingLibTorch) {
  // Touch LibTorch so the library is really used by this binary.
  ASSERT_EQ(at::ones({3}).sum().item<float>(), 3.0f);
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("diablo-fs-" + std::to_string(::getpid()));
  fs::create_directories(root / "a" / "b");
  EXPECT_TRUE(fs::is_directory(root / "a" / "b"));
  fs::remove_all(root);
  EXPECT_FALSE(fs::exists(root));
}
