// The SentencePiece plugin: libsentencepiece behind the C table of
// sentencepiece_plugin.h, built as the module diablo_sentencepiece.so.  The
// entry points that allocate catch what the library or the allocator throws
// and report it as a return code and a message (the others only look up the
// loaded model); only diablo_sentencepiece_plugin is exported.
#include "text/sentencepiece_plugin.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct DiabloSpm {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

void SetError(char* error, size_t error_size, std::string_view message) {
  if (error == nullptr || error_size == 0) return;
  const size_t n = std::min(message.size(), error_size - 1);
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}

bool InRange(const DiabloSpm* model, int32_t id) {
  return id >= 0 && id < model->processor.GetPieceSize();
}

DiabloSpm* Load(const char* path, char* error, size_t error_size) {
  try {
    auto model = std::make_unique<DiabloSpm>();
    const auto status = model->processor.Load(path);
    if (!status.ok()) {
      SetError(error, error_size, status.ToString());
      return nullptr;
    }
    return model.release();
  } catch (const std::exception& e) {
    SetError(error, error_size, e.what());
  } catch (...) {
    SetError(error, error_size, "unknown exception in libsentencepiece");
  }
  return nullptr;
}

void Free(DiabloSpm* model) { delete model; }

int32_t PieceSize(const DiabloSpm* model) { return model->processor.GetPieceSize(); }
int32_t BosId(const DiabloSpm* model) { return model->processor.bos_id(); }
int32_t EosId(const DiabloSpm* model) { return model->processor.eos_id(); }
int32_t UnkId(const DiabloSpm* model) { return model->processor.unk_id(); }
int32_t PadId(const DiabloSpm* model) { return model->processor.pad_id(); }

int IsControl(const DiabloSpm* model, int32_t id) {
  return InRange(model, id) && model->processor.IsControl(id);
}

int IsUnknown(const DiabloSpm* model, int32_t id) {
  return InRange(model, id) && model->processor.IsUnknown(id);
}

const char* IdToPiece(const DiabloSpm* model, int32_t id, size_t* size) {
  if (!InRange(model, id)) {
    *size = 0;
    return nullptr;
  }
  const std::string& piece = model->processor.IdToPiece(id);
  *size = piece.size();
  return piece.data();
}

int32_t PieceToId(const DiabloSpm* model, const char* piece, size_t size) {
  return model->processor.PieceToId(std::string_view(piece, size));
}

int Encode(const DiabloSpm* model, const char* text, size_t size, DiabloSpmPieceFn piece,
           void* context, char* error, size_t error_size) {
  try {
    sentencepiece::ImmutableSentencePieceText spt;
    const auto status = model->processor.Encode(std::string_view(text, size), spt.mutable_proto());
    if (!status.ok()) {
      SetError(error, error_size, status.ToString());
      return DIABLO_SPM_FAILED;
    }
    for (const auto& p : spt.pieces()) {
      if (piece(context, static_cast<int32_t>(p.id()), p.begin(), p.end()) != 0) {
        return DIABLO_SPM_STOPPED;
      }
    }
    return DIABLO_SPM_OK;
  } catch (const std::exception& e) {
    SetError(error, error_size, e.what());
  } catch (...) {
    SetError(error, error_size, "unknown exception in libsentencepiece");
  }
  return DIABLO_SPM_FAILED;
}

int Decode(const DiabloSpm* model, const int32_t* ids, size_t count, DiabloSpmTextFn text,
           void* context, char* error, size_t error_size) {
  try {
    const std::vector<int> pieces(ids, ids + count);
    std::string decoded;
    const auto status = model->processor.Decode(pieces, &decoded);
    if (!status.ok()) {
      SetError(error, error_size, status.ToString());
      return DIABLO_SPM_FAILED;
    }
    return text(context, decoded.data(), decoded.size()) != 0 ? DIABLO_SPM_STOPPED : DIABLO_SPM_OK;
  } catch (const std::exception& e) {
    SetError(error, error_size, e.what());
  } catch (...) {
    SetError(error, error_size, "unknown exception in libsentencepiece");
  }
  return DIABLO_SPM_FAILED;
}

constexpr DiabloSpmApi kApi = {
    .abi_version = DIABLO_SPM_ABI_VERSION,
    .load = Load,
    .free = Free,
    .piece_size = PieceSize,
    .bos_id = BosId,
    .eos_id = EosId,
    .unk_id = UnkId,
    .pad_id = PadId,
    .is_control = IsControl,
    .is_unknown = IsUnknown,
    .id_to_piece = IdToPiece,
    .piece_to_id = PieceToId,
    .encode = Encode,
    .decode = Decode,
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const DiabloSpmApi* diablo_sentencepiece_plugin(
    uint32_t abi_version) {
  return abi_version == DIABLO_SPM_ABI_VERSION ? &kApi : nullptr;
}
