// SentencePiece tokenizer.model (Llama-2, Mistral) through the system
// libsentencepiece.  Compiled only when CMake found the library
// (DIABLO_WITH_SENTENCEPIECE); LoadTokenizer says so when it is absent.
#pragma once

#include <memory>
#include <string>

#include "text/tokenizer.h"

namespace diablo::model {

// Loads `path` (a tokenizer.model).  BOS is added by add_special unless a
// tokenizer_config.json beside it says add_bos_token false; EOS only when it
// says add_eos_token true.  Control pieces ("<s>", "</s>") and "<unk>" written
// in the text are recognised when parse_special is set, as Hugging Face's
// Llama tokenizer does.  Throws FormatError.
std::unique_ptr<Tokenizer> LoadSentencePiece(const std::string& path);

}  // namespace diablo::model
