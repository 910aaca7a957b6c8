#include "common/net_address.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace diablo {
namespace {

using ::testing::HasSubstr;

TEST(ParseHostPort, AcceptsHostAndPort) {
  auto parsed = ParseHostPort("127.0.0.1:50051", "--listen");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->host, "127.0.0.1");
  EXPECT_EQ(parsed->port, 50051);
  EXPECT_EQ(parsed->ToString(), "127.0.0.1:50051");
}

TEST(ParseHostPort, EmptyHostMeansAllInterfaces) {
  auto parsed = ParseHostPort(":8080", "--listen");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->host, "0.0.0.0");
}

TEST(ParseHostPort, AcceptsBracketedIpv6) {
  auto parsed = ParseHostPort("[::1]:9000", "--server");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->host, "[::1]");
  EXPECT_EQ(parsed->port, 9000);
}

TEST(ParseHostPort, RejectsBareIpv6AndNamesTheFlag) {
  auto parsed = ParseHostPort("::1:9000", "--server");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(parsed.status().message(), HasSubstr("--server"));
  EXPECT_THAT(parsed.status().message(), HasSubstr("brackets"));
}

TEST(ParseHostPort, RejectsMissingOrOutOfRangePorts) {
  for (const char* text :
       {"localhost", "localhost:", "localhost:0", "localhost:65536", "localhost:http", ""}) {
    auto parsed = ParseHostPort(text, "--listen");
    EXPECT_FALSE(parsed.ok()) << text;
    EXPECT_THAT(parsed.status().message(), HasSubstr("expected host:port")) << text;
  }
}

TEST(ParseHostPort, PortZeroOnlyWhenListening) {
  EXPECT_FALSE(ParseHostPort("127.0.0.1:0", "--server").ok());
  auto parsed = ParseHostPort("127.0.0.1:0", "--listen", PortZero::kAllowed);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->port, 0);
}

}  // namespace
}  // namespace diablo
