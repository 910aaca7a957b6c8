// SentencePiece tokenizer.model (Llama-2, Mistral) through the system
// libsentencepiece, which only the plugin diablo_sentencepiece.so links
// (sentencepiece_plugin.h says why).  Compiled only when CMake found the
// library (DIABLO_WITH_SENTENCEPIECE); LoadTokenizer says so when it is absent.
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
//
// The first call loads the plugin: $DIABLO_SENTENCEPIECE_PLUGIN (a full path)
// if set, else the first diablo_sentencepiece.so beside the running
// executable, in ../lib/ beside it, or in the build's bin/; a
// std::runtime_error names the places when there is none.
std::unique_ptr<Tokenizer> LoadSentencePiece(const std::string& path);

}  // namespace diablo::model
