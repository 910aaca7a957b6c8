// A small byte-level BPE tokenizer.json in the SmolLM2 style (the 256 byte
// tokens, a few merges, digits isolated before the GPT-2 split, ChatML and
// end-of-text special tokens): what the dataset fuzzer tokenizes with, and
// the main seed of the tokenizer.json fuzzer (make_seeds writes it).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/bpe_tokenizer.h"
#include "text/unicode_classes.h"

namespace diablo::fuzz {

// `bytes` in the vocabulary's spelling (GPT-2's byte-to-character map: " " is "Ġ").
inline std::string ByteLevelSpelling(std::string_view bytes) {
  std::string out;
  for (char c : bytes) model::AppendUtf8(model::ByteToChar(static_cast<uint8_t>(c)), &out);
  return out;
}

// Ids 0..255 are the bytes (byte b has id b), then one token per merge, then
// the added tokens <|endoftext|>, <|im_start|>, <|im_end|> (special) and
// [SEP] (not special, swallows the spaces around it).
inline nlohmann::json TinyTokenizerJson() {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteLevelSpelling(std::string(1, static_cast<char>(b)))] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"t", "h"}, {"th", "e"}, {" ", "the"}, {"i", "n"}, {"in", "g"},
      {" ", "a"}, {"e", "r"},  {"\n", "\n"}, {" ", " "}, {"1", "2"}};
  json merge_list = json::array();
  int next_id = 256;
  for (const auto& [left, right] : merges) {
    merge_list.push_back(ByteLevelSpelling(left) + " " + ByteLevelSpelling(right));
    vocab[ByteLevelSpelling(left + right)] = next_id++;
  }
  json added = json::array();
  for (const char* special : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
    added.push_back({{"id", next_id++}, {"content", special}, {"special", true}});
  }
  added.push_back({{"id", next_id++},
                   {"content", "[SEP]"},
                   {"special", false},
                   {"lstrip", true},
                   {"rstrip", true}});
  return {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         json::array(
             {{{"type", "Digits"}, {"individual_digits", true}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}})}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}}},
  };
}

}  // namespace diablo::fuzz
