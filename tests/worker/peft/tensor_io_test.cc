// The LibTorch bridge to safetensors: tensors of every supported type come
// back equal, strided and non-CPU-layout inputs are written as their values,
// zero-copy views alias the mapping and outlive the file object, and types
// the format cannot hold are refused.
#include "worker/peft/tensor_io.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/worker/peft/test_util.h"

namespace diablo::peft {
namespace {

using diablo::testing::ScratchDir;
using ::testing::HasSubstr;

std::map<std::string, at::Tensor> SampleTensors() {
  at::Tensor base = at::arange(24, at::kFloat).reshape({4, 6}) * 0.5 - 3;
  return {
      {"f32", base},
      {"f16", base.to(at::kHalf)},
      {"bf16", base.to(at::kBFloat16)},
      {"f64", base.to(at::kDouble)},
      {"i64", at::arange(-5, 5, at::kLong) * (int64_t{1} << 40)},
      {"i32", at::arange(-5, 5, at::kInt)},
      {"u8", at::arange(0, 250, 25, at::kByte)},
      {"bool", at::arange(6, at::kLong).remainder(2).eq(0)},
      {"scalar", at::scalar_tensor(7.25)},
      {"empty", at::zeros({0, 3})},
      // Strided: a transposed view and a stepped slice with an offset.
      {"transposed", base.t()},
      {"sliced", base.slice(1, 1, 6, 2)},
  };
}

TEST(TensorIoTest, EveryTypeRoundTripsWithShapeAndValues) {
  ScratchDir dir;
  auto tensors = SampleTensors();
  SaveSafetensors(dir / "t.safetensors", tensors, {{"format", "pt"}});
  std::map<std::string, std::string> metadata;
  auto loaded = LoadSafetensors(dir / "t.safetensors", &metadata);
  EXPECT_EQ(metadata.at("format"), "pt");
  ASSERT_EQ(loaded.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    const at::Tensor& got = loaded.at(name);
    EXPECT_EQ(got.scalar_type(), t.scalar_type());
    EXPECT_EQ(got.sizes(), t.sizes());
    EXPECT_TRUE(at::equal(got, t));
    EXPECT_TRUE(got.is_contiguous());
  }
}

TEST(TensorIoTest, MappedViewsAliasTheFileAndOutliveTheFileObject) {
  ScratchDir dir;
  SaveSafetensors(dir / "t.safetensors", SampleTensors());
  at::Tensor view, copy;
  {
    auto file = model::SafetensorsFile::Open(dir / "t.safetensors");
    const auto* info = file.Find("f32");
    ASSERT_NE(info, nullptr);
    view = MapTensor(file, *info);
    copy = ReadTensor(file, *info);
    auto bytes = file.data(*info);
    EXPECT_EQ(view.data_ptr(), static_cast<const void*>(bytes.data())) << "MapTensor copied";
    EXPECT_NE(copy.data_ptr(), static_cast<const void*>(bytes.data())) << "ReadTensor aliased";
  }
  // The file object is gone; the view still reads the mapping it keeps alive.
  EXPECT_TRUE(at::equal(view, SampleTensors().at("f32")));
  EXPECT_TRUE(at::equal(copy, view));
}

TEST(TensorIoTest, ParsedBytesWithoutAMappingAreCopied) {
  ScratchDir dir;
  SaveSafetensors(dir / "t.safetensors", SampleTensors());
  std::string bytes = diablo::testing::ReadBytes(dir / "t.safetensors");
  auto file = model::SafetensorsFile::Parse(
      {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, "memory");
  at::Tensor t = MapTensor(file, *file.Find("bf16"));
  EXPECT_FALSE(t.data_ptr() >= static_cast<void*>(bytes.data()) &&
               t.data_ptr() < static_cast<void*>(bytes.data() + bytes.size()));
  EXPECT_TRUE(at::equal(t, SampleTensors().at("bf16")));
}

TEST(TensorIoTest, TypesTheFormatCannotHoldAreRefused) {
  ScratchDir dir;
  try {
    SaveSafetensors(dir / "c.safetensors", {{"z", at::zeros({2}, at::kComplexFloat)}});
    FAIL() << "a complex tensor was written";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("cannot be stored in a safetensors file"));
  }
  EXPECT_THROW(SaveSafetensors(dir / "u.safetensors", {{"u", at::Tensor()}}),
               std::invalid_argument);
  EXPECT_FALSE(std::filesystem::exists(dir / "c.safetensors"));
}

TEST(TensorIoTest, DtypeMappingIsABijectionOverTheFormatsTypes) {
  for (auto dtype :
       {model::SafetensorsDtype::kBool, model::SafetensorsDtype::kU8, model::SafetensorsDtype::kI8,
        model::SafetensorsDtype::kF8_E5M2, model::SafetensorsDtype::kF8_E4M3,
        model::SafetensorsDtype::kI16, model::SafetensorsDtype::kU16, model::SafetensorsDtype::kF16,
        model::SafetensorsDtype::kBF16, model::SafetensorsDtype::kI32,
        model::SafetensorsDtype::kU32, model::SafetensorsDtype::kF32, model::SafetensorsDtype::kF64,
        model::SafetensorsDtype::kI64, model::SafetensorsDtype::kU64}) {
    at::ScalarType type = ToScalarType(dtype);
    EXPECT_EQ(ToSafetensorsDtype(type), dtype) << model::DtypeName(dtype);
    EXPECT_EQ(c10::elementSize(type), model::DtypeSize(dtype)) << model::DtypeName(dtype);
  }
}

}  // namespace
}  // namespace diablo::peft
