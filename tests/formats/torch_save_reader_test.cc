// The restricted unpickler and torch.save archive reader, on hand-built
// bytes: what a state dict needs is accepted (including strided and offset
// views), and code execution, unknown opcodes and inconsistent archives are
// refused with a message that names the problem.
#include "formats/torch_save_reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>

#include "formats/gguf.h"
#include "tests/formats/torch_save_builder.h"

namespace diablo::peft {
namespace {

using diablo::model::FormatError;
using diablo::model::SafetensorsDtype;
using diablo::testing::FloatBytes;
using diablo::testing::PickleBuilder;
using diablo::testing::StoredZip;
using diablo::testing::ZipFile;
using ::testing::HasSubstr;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// {"a.block_A": f32 [2, 3] over storage "0" (6 elements),
//  "view": f32 [2, 2] at offset 1 with stride [3, 1] over the same storage}.
std::string TwoTensorPickle() {
  return PickleBuilder()
      .Op('}')
      .Mark()
      .Str("a.block_A")
      .Tensor("FloatStorage", "0", 6, 0, {2, 3}, {3, 1})
      .Str("view")
      .Tensor("FloatStorage", "0", 6, 1, {2, 2}, {3, 1})
      .Op('u')
      .Stop();
}

std::string Archive(const std::string& pickle, std::vector<ZipFile> storages,
                    const std::string& byteorder = "little") {
  std::vector<ZipFile> files = {{"archive/data.pkl", pickle}, {"archive/byteorder", byteorder}};
  for (auto& s : storages) files.push_back({"archive/data/" + s.name, s.data, s.method});
  files.push_back({"archive/version", "3\n"});
  return StoredZip(files);
}

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const FormatError& e) {
    return e.what();
  }
  return "(no error)";
}

std::string UnpickleError(const std::string& pickle) {
  return ErrorOf([&] { UnpickleTensorDict(Bytes(pickle), "evil.pkl"); });
}

std::string ArchiveError(const std::string& archive) {
  return ErrorOf([&] { ParseTorchCheckpoint(Bytes(archive), "adapter.chkpt"); });
}

TEST(TorchSaveReaderTest, ReadsTensorRecordsWithOffsetsAndStrides) {
  auto records = UnpickleTensorDict(Bytes(TwoTensorPickle()), "ok.pkl");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].name, "a.block_A");
  EXPECT_EQ(records[0].storage, "0");
  EXPECT_EQ(records[0].dtype, SafetensorsDtype::kF32);
  EXPECT_EQ(records[0].storage_elements, 6u);
  EXPECT_EQ(records[0].sizes, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(records[1].name, "view");
  EXPECT_EQ(records[1].offset, 1);
  EXPECT_EQ(records[1].strides, (std::vector<int64_t>{3, 1}));
}

TEST(TorchSaveReaderTest, AcceptsAStateDictOrderedDictWithMetadataAndParameters) {
  // nn.Module.state_dict(): OrderedDict() then BUILD with {'_metadata': ...};
  // a saved nn.Parameter goes through _rebuild_parameter.
  std::string pickle = PickleBuilder()
                           .Global("collections", "OrderedDict")
                           .Op(')')
                           .Op('R')
                           .Str("layer.block_A")
                           .Global("torch._utils", "_rebuild_parameter")
                           .Mark()
                           .Tensor("BFloat16Storage", "7", 4, 0, {4}, {1})
                           .Op('\x88')
                           .Global("collections", "OrderedDict")
                           .Op(')')
                           .Op('R')
                           .Op('t')
                           .Op('R')
                           .Op('s')
                           .Op('}')
                           .Str("_metadata")
                           .Op('}')
                           .Str("version")
                           .Int(1)
                           .Op('s')
                           .Op('s')
                           .Op('b')
                           .Stop();
  auto records = UnpickleTensorDict(Bytes(pickle), "sd.pkl");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].name, "layer.block_A");
  EXPECT_EQ(records[0].dtype, SafetensorsDtype::kBF16);
}

TEST(TorchSaveReaderTest, RefusesCodeExecutionNamingTheForbiddenGlobal) {
  std::string os_system =
      PickleBuilder().Global("os", "system").Mark().Str("echo pwned").Op('t').Op('R').Stop();
  EXPECT_THAT(UnpickleError(os_system), HasSubstr("forbidden global 'os.system'"));
  EXPECT_THAT(UnpickleError(os_system), HasSubstr("evil.pkl"));

  std::string eval =
      PickleBuilder().Global("builtins", "eval").Mark().Str("1").Op('t').Op('R').Stop();
  EXPECT_THAT(UnpickleError(eval), HasSubstr("forbidden global 'builtins.eval'"));

  // STACK_GLOBAL (protocol 4) goes through the same allow-list.
  std::string stack_global = PickleBuilder().Str("subprocess").Str("call").Op('\x93').Stop();
  EXPECT_THAT(UnpickleError(stack_global), HasSubstr("forbidden global 'subprocess.call'"));
}

TEST(TorchSaveReaderTest, RefusesOpcodesAndCallsATensorDictDoesNotNeed) {
  EXPECT_THAT(UnpickleError(PickleBuilder().Mark().Raw("ios\nsystem\n").Stop()),
              HasSubstr("opcode 0x69 'i' is not allowed"));  // INST
  EXPECT_THAT(
      UnpickleError(PickleBuilder().Mark().Global("collections", "OrderedDict").Op('o').Stop()),
      HasSubstr("opcode 0x6f 'o' is not allowed"));  // OBJ
  EXPECT_THAT(
      UnpickleError(PickleBuilder().Global("collections", "OrderedDict").Op(')').Op('\x81').Stop()),
      HasSubstr("opcode 0x81"));  // NEWOBJ
  // An allowed global may still not be called unless it builds a tensor dict.
  EXPECT_THAT(UnpickleError(PickleBuilder().Global("torch", "FloatStorage").Op(')').Op('R').Stop()),
              HasSubstr("forbidden call of 'torch.FloatStorage'"));
  // BUILD of anything but a dict would set attributes on an arbitrary object.
  std::string build_tensor =
      PickleBuilder().Tensor("FloatStorage", "0", 1, 0, {1}, {1}).Op('}').Op('b').Stop();
  EXPECT_THAT(UnpickleError(build_tensor), HasSubstr("BUILD of a tensor"));
  // Persistent ids other than storages.
  std::string pid =
      PickleBuilder().Mark().Str("module").Str("x").Str("y").Str("z").Int(1).Op('t').Op('Q').Stop();
  EXPECT_THAT(UnpickleError(pid), HasSubstr("persistent id tag 'module'"));
}

TEST(TorchSaveReaderTest, RefusesMalformedPickles) {
  EXPECT_THAT(UnpickleError(PickleBuilder().Op('}').Str("x").Raw("X\xff\xff\xff\x7f").Stop()),
              HasSubstr("truncated"));
  EXPECT_THAT(UnpickleError(PickleBuilder().Op('s').Stop()), HasSubstr("stack underflow"));
  EXPECT_THAT(UnpickleError(PickleBuilder().Op('h').Raw(std::string(1, '\x05')).Stop()),
              HasSubstr("memo entry 5"));
  EXPECT_THAT(UnpickleError(PickleBuilder().Op(']').Stop()), HasSubstr("not a dict of tensors"));
  EXPECT_THAT(UnpickleError(PickleBuilder().Op('}').Str("k").Int(3).Op('s').Stop()),
              HasSubstr("the value of 'k' is a int, not a tensor"));
  EXPECT_THAT(UnpickleError(std::string("\x80\x02}", 3)), HasSubstr("truncated"));
  // A dict stored into itself through the memo: refused, no leak, no loop.
  std::string cycle = PickleBuilder()
                          .Op('}')
                          .Op('q')
                          .Raw(std::string(1, '\0'))
                          .Str("self")
                          .Op('h')
                          .Raw(std::string(1, '\0'))
                          .Op('s')
                          .Stop();
  EXPECT_THAT(UnpickleError(cycle), HasSubstr("not a tensor"));
  // The same key twice.
  std::string twice = PickleBuilder()
                          .Op('}')
                          .Mark()
                          .Str("k")
                          .Tensor("FloatStorage", "0", 1, 0, {1}, {1})
                          .Str("k")
                          .Tensor("FloatStorage", "0", 1, 0, {1}, {1})
                          .Op('u')
                          .Stop();
  EXPECT_THAT(UnpickleError(twice), HasSubstr("the key 'k' appears twice"));
  // Negative sizes.
  std::string negative =
      PickleBuilder().Op('}').Str("k").Tensor("FloatStorage", "0", 4, 0, {-1}, {1}).Op('s').Stop();
  EXPECT_THAT(UnpickleError(negative), HasSubstr("negative"));
}

TEST(TorchSaveReaderTest, ReadsAnArchiveAndItsStorages) {
  std::vector<float> values = {0, 1, 2, 3, 4, 5};
  std::string archive = Archive(TwoTensorPickle(), {{"0", FloatBytes(values)}});
  TorchCheckpoint ckpt = ParseTorchCheckpoint(Bytes(archive), "adapter.chkpt");
  ASSERT_EQ(ckpt.tensors.size(), 2u);
  ASSERT_EQ(ckpt.storages.count("0"), 1u);
  EXPECT_EQ(ckpt.storages.at("0").size(), 6 * sizeof(float));
  float third;
  std::memcpy(&third, ckpt.storages.at("0").data() + 2 * sizeof(float), sizeof(float));
  EXPECT_EQ(third, 2.0f);
}

TEST(TorchSaveReaderTest, RefusesInconsistentArchives) {
  std::string six = FloatBytes({0, 1, 2, 3, 4, 5});
  EXPECT_THAT(ArchiveError(Archive(TwoTensorPickle(), {{"0", six.substr(0, 20)}})),
              HasSubstr("storage '0' holds 20 bytes, not 6 elements of F32"));
  EXPECT_THAT(ArchiveError(Archive(TwoTensorPickle(), {})),
              HasSubstr("refers to storage '0', which the archive does not contain"));
  std::string beyond = PickleBuilder()
                           .Op('}')
                           .Str("k")
                           .Tensor("FloatStorage", "0", 6, 3, {2, 2}, {3, 1})
                           .Op('s')
                           .Stop();
  EXPECT_THAT(ArchiveError(Archive(beyond, {{"0", six}})), HasSubstr("reaches beyond its storage"));
  std::string expanded = PickleBuilder()
                             .Op('}')
                             .Str("k")
                             .Tensor("FloatStorage", "0", 6, 0, {1000}, {0})
                             .Op('s')
                             .Stop();
  EXPECT_THAT(ArchiveError(Archive(expanded, {{"0", six}})), HasSubstr("expanded views"));
  EXPECT_THAT(ArchiveError(Archive(TwoTensorPickle(), {{"0", six}}, "big")),
              HasSubstr("big-endian"));
  EXPECT_THAT(ArchiveError(Archive(TwoTensorPickle(), {{"0", six, 8}})),
              HasSubstr("is compressed"));

  std::string corrupt = Archive(TwoTensorPickle(), {{"0", six}});
  corrupt[corrupt.find(six) + 1] ^= 0x40;
  EXPECT_THAT(ArchiveError(corrupt), HasSubstr("CRC-32"));

  EXPECT_THAT(ArchiveError(TwoTensorPickle()), HasSubstr("legacy"));
  EXPECT_THAT(ArchiveError("definitely not a zip file at all"),
              HasSubstr("not a valid zip archive"));
  EXPECT_THAT(ArchiveError(StoredZip({{"archive/other", "x"}})), HasSubstr("no <name>/data.pkl"));
  std::string truncated = Archive(TwoTensorPickle(), {{"0", six}});
  truncated.resize(truncated.size() - 5);
  EXPECT_THAT(ArchiveError(truncated), HasSubstr("not a valid zip archive"));
}

}  // namespace
}  // namespace diablo::peft
