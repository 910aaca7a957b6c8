// The safetensors reader and writer without LibTorch: round trips, the
// writer's guarantees (deterministic, aligned, atomic), and rejection of
// deliberately broken files with a message that says what is wrong.
#include "formats/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "tests/worker/peft/test_util.h"

namespace diablo::model {
namespace {

using diablo::testing::ReadBytes;
using diablo::testing::ScratchDir;
using diablo::testing::WriteBytes;
using ::testing::HasSubstr;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

template <typename T>
std::string Raw(std::initializer_list<T> values) {
  std::string out;
  for (T v : values) out.append(reinterpret_cast<const char*>(&v), sizeof(T));
  return out;
}

// A file made of `header` (as given, no padding) followed by `data`.
std::string MakeFile(const std::string& header, const std::string& data) {
  uint64_t n = header.size();
  std::string out(reinterpret_cast<const char*>(&n), 8);
  return out + header + data;
}

TEST(SafetensorsTest, RoundTripKeepsNamesShapesDtypesBytesAndMetadata) {
  ScratchDir dir;
  std::string f32 = Raw<float>({1.5f, -2.0f, 3.25f, 0.0f, 5.0f, 6.0f});
  std::string bf16 = Raw<uint16_t>({0x3f80, 0xc000, 0x4040});
  std::string i64 = Raw<int64_t>({-7});
  std::string u8 = Raw<uint8_t>({1, 2, 3, 4, 5});
  std::string path = dir / "weights.safetensors";
  WriteSafetensors(path,
                   {{"w", SafetensorsDtype::kF32, {2, 3}, Bytes(f32)},
                    {"b", SafetensorsDtype::kBF16, {3}, Bytes(bf16)},
                    {"step", SafetensorsDtype::kI64, {}, Bytes(i64)},
                    {"mask", SafetensorsDtype::kU8, {5}, Bytes(u8)},
                    {"empty", SafetensorsDtype::kF16, {0, 7}, {}}},
                   {{"format", "pt"}, {"note", "ünïcode"}});

  SafetensorsFile file = SafetensorsFile::Open(path);
  ASSERT_EQ(file.tensors().size(), 5u);
  std::vector<std::string> names;
  for (const auto& t : file.tensors()) names.push_back(t.name);
  EXPECT_THAT(names, ::testing::ElementsAre("b", "empty", "mask", "step", "w"));

  const SafetensorsTensorInfo* w = file.Find("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, SafetensorsDtype::kF32);
  EXPECT_EQ(w->shape, (std::vector<int64_t>{2, 3}));
  auto w_bytes = file.data(*w);
  EXPECT_EQ(std::string(w_bytes.begin(), w_bytes.end()), f32);
  auto b_bytes = file.data(*file.Find("b"));
  EXPECT_EQ(std::string(b_bytes.begin(), b_bytes.end()), bf16);
  EXPECT_TRUE(file.Find("step")->shape.empty());
  EXPECT_EQ(file.Find("step")->elements(), 1u);
  EXPECT_EQ(file.Find("empty")->byte_size(), 0u);
  EXPECT_EQ(file.Find("missing"), nullptr);
  EXPECT_EQ(file.metadata().at("note"), "ünïcode");
  EXPECT_NE(file.mapping(), nullptr);
}

TEST(SafetensorsTest, WriterIsDeterministicAlignedAndOrderIndependent) {
  ScratchDir dir;
  std::string f64 = Raw<double>({1.0, 2.0}), f16 = Raw<uint16_t>({1, 2, 3}), b = Raw<uint8_t>({1});
  std::vector<SafetensorsEntry> entries = {{"z_bool", SafetensorsDtype::kBool, {1}, Bytes(b)},
                                           {"a_half", SafetensorsDtype::kF16, {3}, Bytes(f16)},
                                           {"m_double", SafetensorsDtype::kF64, {2}, Bytes(f64)}};
  WriteSafetensors(dir / "one", entries);
  std::reverse(entries.begin(), entries.end());
  WriteSafetensors(dir / "two", entries);
  std::string one = ReadBytes(dir / "one");
  EXPECT_EQ(one, ReadBytes(dir / "two"));

  uint64_t header_size;
  std::memcpy(&header_size, one.data(), 8);
  EXPECT_EQ((8 + header_size) % 8, 0u) << "the data section must start 8-byte aligned";
  EXPECT_EQ(one.substr(8, header_size).find_last_not_of(' '), one.substr(8, header_size).rfind('}'))
      << "the header is padded with spaces only";
  SafetensorsFile file = SafetensorsFile::Open(dir / "one");
  for (const auto& t : file.tensors()) {
    EXPECT_EQ(t.begin % DtypeSize(t.dtype), 0u) << t.name << " is not naturally aligned";
  }
}

TEST(SafetensorsTest, WriterReplacesAtomicallyAndLeavesNoTemporaryFiles) {
  ScratchDir dir;
  std::string path = dir / "a.safetensors";
  WriteBytes(path, "old contents");
  std::string v = Raw<float>({4.0f});
  WriteSafetensors(path, {{"x", SafetensorsDtype::kF32, {1}, Bytes(v)}});
  EXPECT_EQ(SafetensorsFile::Open(path).tensors().size(), 1u);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    ++files;
    EXPECT_EQ(e.path().filename(), "a.safetensors");
  }
  EXPECT_EQ(files, 1);
}

TEST(SafetensorsTest, WriterReportsUnwritablePaths) {
  ScratchDir dir;
  std::string path = dir / "no/such/folder/a.safetensors";
  try {
    WriteSafetensors(path, {});
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
  }
}

TEST(SafetensorsTest, WriterRefusesInconsistentEntries) {
  ScratchDir dir;
  std::string v = Raw<float>({1.0f, 2.0f});
  EXPECT_THROW(WriteSafetensors(dir / "a", {{"x", SafetensorsDtype::kF32, {3}, Bytes(v)}}),
               std::invalid_argument);
  EXPECT_THROW(WriteSafetensors(dir / "a", {{"x", SafetensorsDtype::kF32, {2}, Bytes(v)},
                                            {"x", SafetensorsDtype::kF32, {2}, Bytes(v)}}),
               std::invalid_argument);
  EXPECT_THROW(
      WriteSafetensors(dir / "a", {{"__metadata__", SafetensorsDtype::kF32, {2}, Bytes(v)}}),
      std::invalid_argument);
  EXPECT_THROW(WriteSafetensors(dir / "a", {{"x", SafetensorsDtype::kF32, {-2}, Bytes(v)}}),
               std::invalid_argument);
  EXPECT_FALSE(std::filesystem::exists(dir / "a"));
}

TEST(SafetensorsTest, EmptyFileAndEmptyHeaderObjectAreHandled) {
  SafetensorsFile file = SafetensorsFile::Parse(Bytes(MakeFile("{}", "")), "mem");
  EXPECT_TRUE(file.tensors().empty());
  ScratchDir dir;
  WriteBytes(dir / "empty", "");
  EXPECT_THROW(SafetensorsFile::Open(dir / "empty"), FormatError);
  EXPECT_THROW(SafetensorsFile::Open(dir / "missing"), FormatError);
}

struct BrokenCase {
  const char* name;
  std::string bytes;
  const char* expected;  // part of the message
};

std::vector<BrokenCase> BrokenFiles() {
  const std::string four_floats(16, '\0');
  const std::string good = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  std::string truncated = MakeFile(good, four_floats);
  truncated.resize(truncated.size() - 3);
  std::string header_beyond = MakeFile(good, four_floats);
  uint64_t huge = 4096;
  std::memcpy(header_beyond.data(), &huge, 8);
  std::string header_too_big = MakeFile(good, four_floats);
  uint64_t over_limit = kMaxSafetensorsHeaderBytes + 1;
  std::memcpy(header_too_big.data(), &over_limit, 8);
  std::string deep =
      "{\"__metadata__\":{\"a\":" + std::string(50, '[') + std::string(50, ']') + "}}";

  return {
      {"shorter than the length prefix", "abc", "fewer than the 8-byte header length"},
      {"truncated data", truncated, "beyond the data section"},
      {"header length beyond the file", header_beyond, "truncated file"},
      {"header length over the limit", header_too_big, "limit"},
      {"offsets out of range",
       MakeFile(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})", four_floats),
       "beyond the data section"},
      {"overlapping tensors",
       MakeFile(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                four_floats),
       "overlap"},
      {"hole between tensors",
       MakeFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                R"("b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}})",
                four_floats),
       "belong to no tensor"},
      {"trailing bytes", MakeFile(good, four_floats + "xx"), "trailing bytes"},
      {"2^40-element shape",
       MakeFile(R"({"a":{"dtype":"F32","shape":[1048576,1048576],"data_offsets":[0,16]}})",
                four_floats),
       "need 4398046511104"},
      {"shape overflowing 64 bits",
       MakeFile(
           R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}})",
           four_floats),
       "overflows 64 bits"},
      {"negative dimension",
       MakeFile(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", four_floats),
       "negative"},
      {"fractional dimension",
       MakeFile(R"({"a":{"dtype":"F32","shape":[4.5],"data_offsets":[0,16]}})", four_floats),
       "not a non-negative integer"},
      {"offsets not matching the shape",
       MakeFile(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", four_floats),
       "need 12"},
      {"end before begin",
       MakeFile(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}})", four_floats),
       "end before they begin"},
      {"unknown dtype",
       MakeFile(R"({"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", four_floats),
       "unknown dtype 'F128'"},
      {"missing dtype", MakeFile(R"({"a":{"shape":[4],"data_offsets":[0,16]}})", four_floats),
       "'dtype'"},
      {"unknown field",
       MakeFile(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16],"x":1}})", four_floats),
       "unknown field 'x'"},
      {"bad JSON", MakeFile(R"({"a":{"dtype":"F32","shape":[4],)", four_floats), "not valid JSON"},
      {"JSON array header", MakeFile("[1, 2]", ""), "does not start with '{'"},
      {"JSON garbage after the object", MakeFile(good + "xyz", four_floats), "not valid JSON"},
      {"entry not an object", MakeFile(R"({"a":[1,2]})", ""), "not a JSON object"},
      {"duplicate tensor names",
       MakeFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                four_floats),
       "repeats the key 'a'"},
      {"non-string metadata", MakeFile(R"({"__metadata__":{"step":3}})", ""), "is not a string"},
      {"deep nesting", MakeFile(deep, ""), "nests deeper"},
  };
}

TEST(SafetensorsTest, BrokenFilesAreRejectedWithAMessageSayingWhatIsWrong) {
  for (const BrokenCase& c : BrokenFiles()) {
    SCOPED_TRACE(c.name);
    try {
      SafetensorsFile::Parse(Bytes(c.bytes), "broken.safetensors");
      ADD_FAILURE() << "accepted a file with " << c.name;
    } catch (const FormatError& e) {
      EXPECT_THAT(e.what(), HasSubstr("broken.safetensors"));
      EXPECT_THAT(e.what(), HasSubstr(c.expected));
    }
  }
}

TEST(SafetensorsTest, ErrorsNameTheTensor) {
  std::string bytes = MakeFile(
      R"({"model.layers.3.mlp.up_proj.weight":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}})",
      std::string(16, '\0'));
  try {
    SafetensorsFile::Parse(Bytes(bytes), "m.safetensors");
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_THAT(e.what(), HasSubstr("tensor 'model.layers.3.mlp.up_proj.weight'"));
  }
}

}  // namespace
}  // namespace diablo::model
