// Conversions between safetensors entries and at::Tensors.  Copies go through
// at::empty + memcpy so that the result never aliases the file; views use
// from_blob with a deleter that owns a reference to the mapping.
#include "worker/peft/tensor_io.h"

#include <ATen/ATen.h>

#include <cstring>
#include <stdexcept>
#include <vector>

namespace diablo::peft {
namespace {

using model::SafetensorsDtype;

struct TypePair {
  SafetensorsDtype dtype;
  at::ScalarType type;
};
constexpr TypePair kTypes[] = {
    {SafetensorsDtype::kBool, at::kBool},
    {SafetensorsDtype::kU8, at::kByte},
    {SafetensorsDtype::kI8, at::kChar},
    {SafetensorsDtype::kF8_E5M2, at::kFloat8_e5m2},
    {SafetensorsDtype::kF8_E4M3, at::kFloat8_e4m3fn},
    {SafetensorsDtype::kI16, at::kShort},
    {SafetensorsDtype::kU16, at::kUInt16},
    {SafetensorsDtype::kF16, at::kHalf},
    {SafetensorsDtype::kBF16, at::kBFloat16},
    {SafetensorsDtype::kI32, at::kInt},
    {SafetensorsDtype::kU32, at::kUInt32},
    {SafetensorsDtype::kF32, at::kFloat},
    {SafetensorsDtype::kF64, at::kDouble},
    {SafetensorsDtype::kI64, at::kLong},
    {SafetensorsDtype::kU64, at::kUInt64},
};

}  // namespace

at::ScalarType ToScalarType(SafetensorsDtype dtype) {
  for (const auto& p : kTypes) {
    if (p.dtype == dtype) return p.type;
  }
  throw std::invalid_argument(std::string("no LibTorch type for safetensors dtype ") +
                              model::DtypeName(dtype));
}

SafetensorsDtype ToSafetensorsDtype(at::ScalarType type) {
  for (const auto& p : kTypes) {
    if (p.type == type) return p.dtype;
  }
  throw std::invalid_argument(std::string("tensors of type ") + c10::toString(type) +
                              " cannot be stored in a safetensors file");
}

at::Tensor ReadTensor(const model::SafetensorsFile& file,
                      const model::SafetensorsTensorInfo& info) {
  at::Tensor out = at::empty(info.shape, at::TensorOptions().dtype(ToScalarType(info.dtype)));
  std::span<const uint8_t> bytes = file.data(info);
  if (!bytes.empty()) std::memcpy(out.data_ptr(), bytes.data(), bytes.size());
  return out;
}

at::Tensor MapTensor(const model::SafetensorsFile& file, const model::SafetensorsTensorInfo& info) {
  std::shared_ptr<const void> mapping = file.mapping();
  std::span<const uint8_t> bytes = file.data(info);
  auto address = reinterpret_cast<uintptr_t>(bytes.data());
  if (mapping == nullptr || address % model::DtypeSize(info.dtype) != 0) {
    return ReadTensor(file, info);
  }
  // from_blob wants a mutable pointer; the memory stays read-only (see header).
  return at::from_blob(
      const_cast<uint8_t*>(bytes.data()), info.shape, [mapping](void*) mutable { mapping.reset(); },
      at::TensorOptions().dtype(ToScalarType(info.dtype)));
}

std::map<std::string, at::Tensor> LoadSafetensors(const std::string& path,
                                                  std::map<std::string, std::string>* metadata) {
  model::SafetensorsFile file = model::SafetensorsFile::Open(path);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& info : file.tensors()) tensors.emplace(info.name, ReadTensor(file, info));
  if (metadata != nullptr) *metadata = file.metadata();
  return tensors;
}

void SaveSafetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                     const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> contiguous;  // keeps the bytes alive during the write
  std::vector<model::SafetensorsEntry> entries;
  contiguous.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.defined()) throw std::invalid_argument("tensor '" + name + "' is undefined");
    if (tensor.layout() != at::kStrided) {
      throw std::invalid_argument("tensor '" + name + "' is not dense and cannot be saved");
    }
    model::SafetensorsDtype dtype = ToSafetensorsDtype(tensor.scalar_type());
    contiguous.push_back(tensor.detach().to(at::kCPU).contiguous());
    const at::Tensor& t = contiguous.back();
    std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
    size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
    entries.push_back(
        {name, dtype, std::move(shape), {static_cast<const uint8_t*>(t.const_data_ptr()), bytes}});
  }
  model::WriteSafetensors(path, std::move(entries), metadata);
}

}  // namespace diablo::peft
