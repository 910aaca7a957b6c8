// BlockLayout: how DiaBlo splits a layer's input and output columns into
// diagonal blocks, computed exactly as the reference implementation does so
// that adapters trained elsewhere load here unchanged (DESIGN.md, "The method").
#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <string>

#include "kernels/block_diag.h"

namespace diablo::kernels {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string ShapeString(at::IntArrayRef shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

}  // namespace

BlockLayout BlockLayout::For(int64_t in, int64_t out, int64_t requested_blocks) {
  if (in <= 0 || out <= 0) {
    throw std::invalid_argument("DiaBlo block layout: layer sizes must be positive, got in=" +
                                std::to_string(in) + " out=" + std::to_string(out));
  }
  if (requested_blocks <= 0) {
    throw std::invalid_argument("DiaBlo block layout: the number of blocks must be positive, got " +
                                std::to_string(requested_blocks) + " (set `blocks` to e.g. 64)");
  }
  BlockLayout layout;
  layout.in = in;
  layout.out = out;
  layout.block_in = CeilDiv(in, requested_blocks);
  layout.block_out = CeilDiv(out, requested_blocks);
  // Rounding the block sizes up can leave trailing blocks with no columns on
  // both sides; the reference drops those, which is why N_eff may be < N.
  layout.blocks = std::max(CeilDiv(in, layout.block_in), CeilDiv(out, layout.block_out));
  return layout;
}

BlockLayout BlockLayout::FromAdapterShape(int64_t in, int64_t out, at::IntArrayRef adapter_shape) {
  auto reject = [&](const std::string& why) {
    return std::invalid_argument("DiaBlo adapter of shape " + ShapeString(adapter_shape) +
                                 " does not fit a layer with in=" + std::to_string(in) +
                                 " out=" + std::to_string(out) + ": " + why +
                                 " (was it trained for a different layer or base model?)");
  };
  if (in <= 0 || out <= 0) throw reject("layer sizes must be positive");
  if (adapter_shape.size() != 3)
    throw reject("expected 3 dimensions [blocks, block_in, block_out]");
  const int64_t blocks = adapter_shape[0], block_in = adapter_shape[1],
                block_out = adapter_shape[2];
  if (blocks <= 0 || block_in <= 0 || block_out <= 0)
    throw reject("every dimension must be positive");
  // Every N with ceil(in/N) == block_in and ceil(out/N) == block_out yields the
  // same layout, and if any such N exists, the smallest one is
  // max(ceil(in/block_in), ceil(out/block_out)); so checking that single
  // candidate decides whether the shape is a reference layout.
  const int64_t candidate = std::max(CeilDiv(in, block_in), CeilDiv(out, block_out));
  const BlockLayout expected = For(in, out, candidate);
  if (expected.block_in != block_in || expected.block_out != block_out ||
      expected.blocks != blocks) {
    throw reject("the nearest valid layout is [" + std::to_string(expected.blocks) + ", " +
                 std::to_string(expected.block_in) + ", " + std::to_string(expected.block_out) +
                 "] (N=" + std::to_string(candidate) + ")");
  }
  return expected;
}

}  // namespace diablo::kernels
