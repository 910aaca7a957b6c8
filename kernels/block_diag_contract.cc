#include "kernels/block_diag_contract.h"

#include <ATen/MemoryOverlap.h>

#include <stdexcept>
#include <string>

namespace diablo::kernels::contract {
namespace {

std::string Shape(const at::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

[[noreturn]] void Fail(const char* op, const std::string& message) {
  throw std::invalid_argument(std::string(op) + ": " + message);
}

bool IsActivationType(at::ScalarType type) {
  return type == at::kFloat || type == at::kBFloat16 || type == at::kHalf;
}

void CheckAdapter(const char* op, const at::Tensor& A, const BlockLayout& l) {
  CheckLayout(op, l);
  if (!A.defined() || A.dim() != 3 || A.size(0) != l.blocks || A.size(1) != l.block_in ||
      A.size(2) != l.block_out) {
    Fail(op, "adapter must have shape [" + std::to_string(l.blocks) + ", " +
                 std::to_string(l.block_in) + ", " + std::to_string(l.block_out) +
                 "] for this layout, got " + Shape(A));
  }
  if (A.scalar_type() != at::kFloat) {
    Fail(op, "the adapter is trained and stored in fp32, got " +
                 std::string(c10::toString(A.scalar_type())) +
                 "; convert it with .to(torch::kFloat32)");
  }
}

void CheckActivation(const char* op, const at::Tensor& t, const char* name, int64_t width) {
  if (!t.defined() || t.dim() < 1 || t.size(-1) != width)
    Fail(op, std::string(name) + " must have shape [..., " + std::to_string(width) + "], got " +
                 Shape(t));
  if (!IsActivationType(t.scalar_type()))
    Fail(op, std::string(name) + " must be fp32, bf16 or fp16, got " +
                 std::string(c10::toString(t.scalar_type())));
}

// The two activations of an op: one dtype (the CUDA kernels are instantiated
// per element type, not per pair), one device, the same rows.
void CheckPair(const char* op, const at::Tensor& a, const char* a_name, const at::Tensor& b,
               const char* b_name) {
  if (a.scalar_type() != b.scalar_type())
    Fail(op, std::string(a_name) + " is " + c10::toString(a.scalar_type()) + " but " + b_name +
                 " is " + c10::toString(b.scalar_type()) +
                 "; both activations must have one dtype (cast one of them)");
  if (a.device() != b.device())
    Fail(op, "all tensors must be on one device, got " + a.device().str() + " (" + a_name +
                 ") and " + b.device().str() + " (" + b_name + ")");
  if (a.sizes().slice(0, a.dim() - 1) != b.sizes().slice(0, b.dim() - 1))
    Fail(op, std::string(a_name) + " " + Shape(a) + " and " + b_name + " " + Shape(b) +
                 " must agree on every dimension but the last");
}

void CheckSameDevice(const char* op, const at::Tensor& t, const char* name, const at::Tensor& A) {
  if (t.device() != A.device())
    Fail(op, std::string(name) + " is on " + t.device().str() + " but the adapter is on " +
                 A.device().str() + "; all tensors must be on one device");
}

// An output updated in place must not alias its input, nor be a broadcast
// view whose rows share memory (two kernel threads would race on them).
void CheckWritable(const char* op, const at::Tensor& out, const char* out_name,
                   const at::Tensor& in, const char* in_name) {
  if (at::has_internal_overlap(out) == at::MemOverlap::Yes)
    Fail(op, std::string(out_name) +
                 " has elements that share memory (an expanded view); pass a tensor of its own");
  const at::MemOverlapStatus status = at::get_overlap_status(out, in);
  if (status == at::MemOverlapStatus::Full || status == at::MemOverlapStatus::Partial)
    Fail(op,
         std::string(out_name) + " overlaps " + in_name + "; the output must be separate memory");
}

}  // namespace

void CheckLayout(const char* op, const BlockLayout& l) {
  if (l.in <= 0 || l.out <= 0 || l.blocks <= 0 || l.block_in <= 0 || l.block_out <= 0 ||
      l.blocks * l.block_in < l.in || l.blocks * l.block_out < l.out) {
    Fail(op, "invalid block layout (in=" + std::to_string(l.in) + " out=" + std::to_string(l.out) +
                 " blocks=" + std::to_string(l.blocks) + " block_in=" + std::to_string(l.block_in) +
                 " block_out=" + std::to_string(l.block_out) + "); build it with BlockLayout::For");
  }
}

void CheckApply(const char* op, const at::Tensor& out, const char* out_name, const at::Tensor& in,
                const char* in_name, const at::Tensor& A, const BlockLayout& layout,
                bool transpose) {
  CheckAdapter(op, A, layout);
  CheckActivation(op, in, in_name, transpose ? layout.out : layout.in);
  CheckActivation(op, out, out_name, transpose ? layout.in : layout.out);
  CheckPair(op, in, in_name, out, out_name);
  CheckSameDevice(op, in, in_name, A);
  CheckWritable(op, out, out_name, in, in_name);
}

void CheckWeightGrad(const char* op, const at::Tensor& x, const at::Tensor& dy,
                     const BlockLayout& layout) {
  CheckLayout(op, layout);
  CheckActivation(op, x, "x", layout.in);
  CheckActivation(op, dy, "dy", layout.out);
  CheckPair(op, x, "x", dy, "dy");
}

void CheckMerge(const char* op, const at::Tensor& weight, const at::Tensor& A,
                const BlockLayout& layout) {
  CheckAdapter(op, A, layout);
  if (!weight.defined() || weight.dim() != 2 || weight.size(0) != layout.out ||
      weight.size(1) != layout.in) {
    Fail(op, "weight must have shape [" + std::to_string(layout.out) + ", " +
                 std::to_string(layout.in) + "], got " + Shape(weight));
  }
  if (!IsActivationType(weight.scalar_type()))
    Fail(op, "weight must be fp32, bf16 or fp16, got " +
                 std::string(c10::toString(weight.scalar_type())));
  CheckSameDevice(op, weight, "weight", A);
}

}  // namespace diablo::kernels::contract
