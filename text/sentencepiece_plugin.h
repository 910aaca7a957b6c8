// The C interface of the SentencePiece plugin (diablo_sentencepiece.so, built
// from sentencepiece_plugin.cc): the one place libsentencepiece is linked.
// sentencepiece_tokenizer.cc loads it with dlopen(RTLD_LOCAL | RTLD_DEEPBIND)
// so that libsentencepiece's exported symbols never join the process's global
// scope: its gflags-style FLAGS_minloglevel (a 32-byte object) would otherwise
// bind to LibTorch's 4-byte int of that name and overwrite the flags beside it
// at start-up, turning every CAFFE_ENFORCE failure into an abort.  Only plain
// C types cross this boundary: no exceptions, no STL, errors as return codes.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Raised whenever a function below changes; a plugin of another version
// refuses to hand out its table.
#define DIABLO_SPM_ABI_VERSION 1u
// The one symbol the loader looks up (dlsym).
#define DIABLO_SPM_ENTRY_POINT "diablo_sentencepiece_plugin"

typedef struct DiabloSpm DiabloSpm;  // a loaded model; opaque

// Called once per piece of an encoded stretch: its id and its byte span
// [begin, end) in the stretch.  Return nonzero to stop (the encode call then
// fails with DIABLO_SPM_STOPPED).
typedef int (*DiabloSpmPieceFn)(void* context, int32_t id, size_t begin, size_t end);
// Receives decoded text (possibly in several calls).  Nonzero stops.
typedef int (*DiabloSpmTextFn)(void* context, const char* text, size_t size);

enum { DIABLO_SPM_OK = 0, DIABLO_SPM_FAILED = 1, DIABLO_SPM_STOPPED = 2 };

typedef struct DiabloSpmApi {
  uint32_t abi_version;  // DIABLO_SPM_ABI_VERSION of the plugin's build
  // Reads a tokenizer.model.  NULL on failure, with a NUL-terminated message
  // (truncated to error_size) in `error`.
  DiabloSpm* (*load)(const char* path, char* error, size_t error_size);
  void (*free)(DiabloSpm* model);
  int32_t (*piece_size)(const DiabloSpm* model);
  // The reserved ids; -1 where the model defines none.
  int32_t (*bos_id)(const DiabloSpm* model);
  int32_t (*eos_id)(const DiabloSpm* model);
  int32_t (*unk_id)(const DiabloSpm* model);
  int32_t (*pad_id)(const DiabloSpm* model);
  // For ids outside [0, piece_size): 0.
  int (*is_control)(const DiabloSpm* model, int32_t id);
  int (*is_unknown)(const DiabloSpm* model, int32_t id);
  // The piece's bytes, owned by the model (valid until free); NULL with
  // *size 0 for ids outside [0, piece_size).
  const char* (*id_to_piece)(const DiabloSpm* model, int32_t id, size_t* size);
  // The id of `piece`, or the unknown id when no piece is spelt so.
  int32_t (*piece_to_id)(const DiabloSpm* model, const char* piece, size_t size);
  // Encodes `size` bytes of UTF-8 text without BOS/EOS.
  int (*encode)(const DiabloSpm* model, const char* text, size_t size, DiabloSpmPieceFn piece,
                void* context, char* error, size_t error_size);
  // Decodes ids (each in [0, piece_size)) as the library does: control
  // pieces produce no text.
  int (*decode)(const DiabloSpm* model, const int32_t* ids, size_t count, DiabloSpmTextFn text,
                void* context, char* error, size_t error_size);
} DiabloSpmApi;

// The plugin's function table, or NULL when the caller was built against
// another abi_version.
typedef const DiabloSpmApi* (*DiabloSpmEntryFn)(uint32_t abi_version);

#ifdef __cplusplus
}  // extern "C"
#endif
