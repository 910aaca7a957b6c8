// Submit-time dataset check: the trainer's reader over a chunked stream, its
// "<name>:<line>: <problem>" errors turned into the field and line the user
// wrote, and a file with no usable example explained.
#include "server/dataset_check.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <istream>
#include <memory>
#include <stdexcept>
#include <streambuf>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "text/dataset.h"

namespace diablo::server {
namespace {

// Serves `bytes` up to `limit` in chunks; stops at the first failed read
// (kept in status()) as at the end of the file.
class ChunkedReader : public std::streambuf {
 public:
  ChunkedReader(const DatasetBytes& bytes, int64_t limit, int64_t chunk)
      : bytes_(bytes), limit_(std::min(limit, bytes.size)), chunk_(std::max<int64_t>(chunk, 1)) {}

  // Newlines in the bytes served so far.
  int64_t newlines() const { return newlines_; }
  // Whether the bytes served end inside a line that goes on past the limit.
  bool ends_mid_line() const {
    return offset_ < bytes_.size && !buffer_.empty() && buffer_.back() != '\n';
  }
  bool stopped_at_limit() const { return limit_ < bytes_.size; }
  const absl::Status& status() const { return status_; }

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    if (offset_ >= limit_ || !status_.ok()) return traits_type::eof();
    absl::StatusOr<std::string> got = bytes_.read(offset_, std::min(chunk_, limit_ - offset_));
    if (!got.ok()) {
      status_ = got.status();
      return traits_type::eof();
    }
    if (got->empty()) return traits_type::eof();  // shorter than it was
    buffer_ = std::move(*got);
    offset_ += static_cast<int64_t>(buffer_.size());
    newlines_ += std::count(buffer_.begin(), buffer_.end(), '\n');
    setg(buffer_.data(), buffer_.data(), buffer_.data() + buffer_.size());
    return traits_type::to_int_type(*gptr());
  }

 private:
  const DatasetBytes& bytes_;
  const int64_t limit_;
  const int64_t chunk_;
  std::string buffer_;
  int64_t offset_ = 0;
  int64_t newlines_ = 0;
  absl::Status status_;
};

// The line number of a reader error "<name>:<line>: <problem>", or 0.
int64_t LineOf(const std::string& message, const std::string& name, std::string* problem) {
  if (!absl::StartsWith(message, name + ":")) return 0;
  const size_t digits = name.size() + 1;
  const size_t colon = message.find(": ", digits);
  int64_t line = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(message.substr(digits, colon - digits), &line))
    return 0;
  *problem = message.substr(colon + 2);
  return line;
}

// Why none of a complete file's examples is usable, and what to change.
std::string NoUsableExample(const std::string& where, const train::DatasetScan& scan,
                            const train::DataConfig& config) {
  const int64_t m = config.max_seq_len;
  const std::string counted =
      absl::StrCat("its ", scan.stats.lines, scan.stats.lines == 1 ? " example" : " examples");
  if (scan.shortest_tokens > m && config.truncation == train::Truncation::kDrop)
    return absl::StrCat(where, ": no example fits data.max_seq_len ", m,
                        " after tokenisation with the model's tokenizer (the shortest of ", counted,
                        " has ", scan.shortest_tokens,
                        " tokens), and data.truncation: drop skips longer ones; raise ",
                        "data.max_seq_len to at least ", scan.shortest_tokens,
                        ", or set data.truncation: right to cut long examples to fit");
  if (scan.shortest_tokens > m)
    return absl::StrCat(
        where, ": no example fits data.max_seq_len ", m,
        " after tokenisation with the model's tokenizer (the shortest of ", counted, " has ",
        scan.shortest_tokens,
        " tokens), and cutting each to fit (data.truncation: right) leaves no response token to "
        "learn from; raise data.max_seq_len to at least ",
        scan.shortest_tokens, ", or shorten the prompts");
  return absl::StrCat(where, ": none of ", counted,
                      " has a token to learn from within data.max_seq_len ", m,
                      " after tokenisation with the model's tokenizer (", scan.stats.dropped,
                      " dropped as too long or without a response); raise data.max_seq_len, or "
                      "check that each example has a response");
}

}  // namespace

absl::StatusOr<DatasetBytes> LocalDatasetBytes(const std::filesystem::path& path) {
  auto in = std::make_shared<std::ifstream>(path, std::ios::binary);
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (!*in || ec) return absl::FailedPreconditionError("cannot be read by the scheduler");
  DatasetBytes bytes;
  bytes.size = static_cast<int64_t>(size);
  bytes.read = [in](int64_t offset, int64_t length) -> absl::StatusOr<std::string> {
    in->clear();  // a short read at the end of the file set eof and fail
    in->seekg(offset);
    std::string out(static_cast<size_t>(length), '\0');
    in->read(out.data(), length);
    if (in->bad()) return absl::UnavailableError("a read error on the scheduler");
    out.resize(static_cast<size_t>(in->gcount()));
    return out;
  };
  return bytes;
}

absl::Status CheckDatasetLines(const DatasetCheck& check, const DatasetBytes& bytes,
                               const train::DataConfig& config) {
  const std::string where = absl::StrCat("spec.", check.field);
  ChunkedReader reader(bytes, check.max_bytes, check.chunk_bytes);
  std::istream in(&reader);
  train::DatasetScan scan;
  try {
    scan = check.tokenizer != nullptr
               ? train::ScanDataset(in, check.field, config, *check.tokenizer, *check.chat_template)
               : train::ScanRecords(in, check.field, config);
  } catch (const std::exception& e) {
    if (!reader.status().ok()) {
      return absl::UnavailableError(
          absl::StrCat(where, ": reading it failed (", reader.status().message(), "); retry"));
    }
    std::string problem;
    const int64_t line = LineOf(e.what(), check.field, &problem);
    // The last line of a file checked only in part may be cut short: not
    // the user's error.
    if (line > 0 && reader.ends_mid_line() && line == reader.newlines() + 1)
      return absl::OkStatus();
    if (line > 0)
      return absl::InvalidArgumentError(absl::StrCat(where, ": line ", line, ": ", problem));
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", e.what()));
  }
  if (!reader.status().ok())
    return absl::UnavailableError(
        absl::StrCat(where, ": reading it failed (", reader.status().message(), "); retry"));
  if (reader.stopped_at_limit()) return absl::OkStatus();  // the trainer checks the rest
  if (scan.stats.lines == 0)
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": has no records (an empty JSONL file)"));
  if (check.tokenizer != nullptr && scan.stats.examples == 0)
    return absl::InvalidArgumentError(NoUsableExample(where, scan, config));
  return absl::OkStatus();
}

}  // namespace diablo::server
