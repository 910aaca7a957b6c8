// safetensors interoperability with the reference implementation (the
// Python `safetensors` package in the test venv): files it writes read
// correctly here, and files written here load there with the same values.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "formats/safetensors.h"
#include "tests/worker/peft/test_util.h"

namespace diablo::model {
namespace {

using diablo::testing::ReadBytes;
using diablo::testing::RunPythonScript;
using diablo::testing::ScratchDir;

std::string Hex(std::span<const uint8_t> bytes) {
  std::string out;
  char buf[3];
  for (uint8_t b : bytes) {
    std::snprintf(buf, sizeof(buf), "%02x", b);
    out += buf;
  }
  return out;
}

template <typename T>
std::span<const uint8_t> Span(const std::vector<T>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(T)};
}

TEST(SafetensorsPythonTest, FilesWrittenByPythonReadCorrectly) {
  DIABLO_REQUIRE_PYTHON();
  ScratchDir dir;
  auto result = RunPythonScript("formats/safetensors_interop.py",
                                {"write", dir / "py.safetensors", dir / "expected.json"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto expected = nlohmann::json::parse(ReadBytes(dir / "expected.json"));

  SafetensorsFile file = SafetensorsFile::Open(dir / "py.safetensors");
  EXPECT_EQ(file.metadata().at("origin"), "python");
  ASSERT_EQ(file.tensors().size(), expected.size());
  for (const auto& [name, want] : expected.items()) {
    SCOPED_TRACE(name);
    const SafetensorsTensorInfo* t = file.Find(name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(DtypeName(t->dtype), want["dtype"].get<std::string>());
    EXPECT_EQ(t->shape, want["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(Hex(file.data(*t)), want["hex"].get<std::string>());
  }
}

TEST(SafetensorsPythonTest, FilesWrittenHereLoadInPythonWithTheSameValues) {
  DIABLO_REQUIRE_PYTHON();
  ScratchDir dir;
  std::vector<float> w = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
  std::vector<int64_t> longs = {-3, 0, 7, int64_t{1} << 40};
  std::vector<uint16_t> bf = {0x3f80, 0xc000, 0x4040};  // 1, -2, 3
  std::vector<uint16_t> half = {0x3c00, 0xc500};        // 1, -5
  std::vector<uint8_t> mask = {1, 2, 3, 4, 5}, flag = {1, 0, 1};
  std::vector<double> scalar = {2.5};
  WriteSafetensors(dir / "ours.safetensors",
                   {{"w", SafetensorsDtype::kF32, {2, 3}, Span(w)},
                    {"long", SafetensorsDtype::kI64, {4}, Span(longs)},
                    {"bf", SafetensorsDtype::kBF16, {3}, Span(bf)},
                    {"half", SafetensorsDtype::kF16, {2}, Span(half)},
                    {"mask", SafetensorsDtype::kU8, {5}, Span(mask)},
                    {"flag", SafetensorsDtype::kBool, {3}, Span(flag)},
                    {"scalar", SafetensorsDtype::kF64, {}, Span(scalar)}},
                   {{"format", "pt"}, {"who", "diablo"}});
  auto result =
      RunPythonScript("formats/safetensors_interop.py", {"check", dir / "ours.safetensors"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

}  // namespace
}  // namespace diablo::model
