// Names that become paths: what a hostile server, worker or user could send
// as an upload, artifact or download name is refused before any write.
#include "common/safe_name.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace diablo {
namespace {

using ::testing::HasSubstr;

TEST(SafeName, OrdinaryRelativePathsPass) {
  EXPECT_TRUE(ValidateRelativePath("adapter/adapter_model.safetensors", "artifact").ok());
  EXPECT_TRUE(ValidateRelativePath("train_config.json", "artifact").ok());
  EXPECT_TRUE(ValidateRelativePath("a/b/c/.hidden..name", "artifact").ok());
  EXPECT_TRUE(ValidateFileName("données été.jsonl", "upload").ok()) << "UTF-8 is fine";
}

TEST(SafeName, EverySpellingOfLeavingTheFolderIsRefused) {
  for (const char* hostile : {"/etc/passwd", "../outside", "adapter/../../outside", "..", ".",
                              "a/./b", "a//b", "a/", "//server/share", "a\\..\\b", "..\\outside"}) {
    SCOPED_TRACE(hostile);
    absl::Status status = ValidateRelativePath(hostile, "artifact name");
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), HasSubstr("artifact name"));
  }
}

TEST(SafeName, ControlCharactersAreRefusedAndNotEchoedRaw) {
  const std::string escape = std::string("x\x1b[2Jy", 6);
  absl::Status status = ValidateRelativePath(escape, "artifact name");
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("control character"));
  EXPECT_EQ(std::string(status.message()).find('\x1b'), std::string::npos)
      << "the message must not carry the escape sequence to the reader's terminal";
  EXPECT_FALSE(ValidateFileName(std::string("a\0b", 3), "upload").ok());
  EXPECT_FALSE(ValidateFileName("line\nbreak", "upload").ok());
}

TEST(SafeName, LengthsAreBounded) {
  EXPECT_TRUE(ValidateFileName(std::string(kMaxNameSegmentBytes, 'a'), "upload").ok());
  EXPECT_FALSE(ValidateFileName(std::string(kMaxNameSegmentBytes + 1, 'a'), "upload").ok());
  std::string deep;
  while (deep.size() <= kMaxRelativePathBytes) deep += "abcdefgh/";
  deep += "x";
  EXPECT_THAT(std::string(ValidateRelativePath(deep, "artifact").message()),
              HasSubstr("longer than"));
  EXPECT_FALSE(ValidateRelativePath("", "artifact").ok());
}

TEST(SafeName, AFileNameHasNoFolders) {
  EXPECT_THAT(std::string(ValidateFileName("sub/file.jsonl", "header.name").message()),
              HasSubstr("must be a file name"));
}

}  // namespace
}  // namespace diablo
