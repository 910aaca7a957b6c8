// The LibTorch side of safetensors files: entries of a parsed file become
// at::Tensors (copied, or zero-copy views that keep the mapping alive), and
// at::Tensors become a written file.  The format itself is parsed in plain
// C++ by formats/safetensors.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <map>
#include <string>

#include "formats/safetensors.h"

namespace diablo::peft {

// Every safetensors dtype has a LibTorch scalar type (F8_E4M3 is e4m3fn).
at::ScalarType ToScalarType(model::SafetensorsDtype dtype);
// Throws std::invalid_argument for types the format cannot hold (complex,
// quantized, ...).
model::SafetensorsDtype ToSafetensorsDtype(at::ScalarType type);

// An owned CPU copy of one tensor of `file`.
at::Tensor ReadTensor(const model::SafetensorsFile& file, const model::SafetensorsTensorInfo& info);

// A CPU tensor over the file's mapped bytes, without a copy; it keeps the
// mapping alive.  The pages are read-only: writing into the tensor crashes,
// so clone() it before any in-place operation.  Falls back to a copy when
// the file was not mapped by SafetensorsFile::Open or the data are not
// aligned to their element size.
at::Tensor MapTensor(const model::SafetensorsFile& file, const model::SafetensorsTensorInfo& info);

// Opens `path` and copies every tensor; fills `metadata` when given.
// Throws model::FormatError.
std::map<std::string, at::Tensor> LoadSafetensors(
    const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

// Writes `tensors` (any device, layout or strides; copied to contiguous CPU
// memory first) atomically to `path`.  Throws std::invalid_argument for an
// unsupported dtype or a sparse tensor, std::runtime_error for I/O errors.
void SaveSafetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                     const std::map<std::string, std::string>& metadata = {});

}  // namespace diablo::peft
