// The restricted unpickler and the torch.save archive checks.  Objects live
// in one arena and refer to each other by index, so hostile pickles (cycles
// through the memo, deep nesting) cannot leak or overflow the stack, and the
// arena's size is capped.
#include "formats/torch_save_reader.h"

#include <bit>
#include <cstdio>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <string_view>
#include <unordered_map>

#include "formats/byte_cursor.h"

namespace diablo::peft {
namespace {

using model::FormatError;
using model::SafetensorsDtype;

// More objects than any tensor dictionary needs (a 70B model's full state
// dict has a few thousand tensors of about fifteen objects each).
constexpr size_t kMaxObjects = size_t{1} << 20;

struct Object {
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kTuple,
    kList,
    kDict,
    kGlobal,
    kStorage,
    kTensor
  };
  Kind kind = Kind::kNone;
  int64_t i = 0;  // bool, int, storage element count
  double f = 0;
  std::string s;              // string, global "module.name", storage key
  std::vector<size_t> items;  // tuple/list elements; dict: key, value, key, value...
  SafetensorsDtype dtype = SafetensorsDtype::kF32;  // storage
  TorchTensorRecord tensor;                         // tensor
};
using Kind = Object::Kind;

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kTuple:
      return "tuple";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kGlobal:
      return "global";
    case Kind::kStorage:
      return "storage";
    case Kind::kTensor:
      return "tensor";
  }
  return "?";
}

constexpr const char kOrderedDict[] = "collections.OrderedDict";
constexpr const char kRebuildTensor[] = "torch._utils._rebuild_tensor_v2";
constexpr const char kRebuildParameter[] = "torch._utils._rebuild_parameter";

std::optional<SafetensorsDtype> StorageDtype(std::string_view global) {
  static const std::map<std::string_view, SafetensorsDtype> kStorages = {
      {"torch.FloatStorage", SafetensorsDtype::kF32},
      {"torch.DoubleStorage", SafetensorsDtype::kF64},
      {"torch.HalfStorage", SafetensorsDtype::kF16},
      {"torch.BFloat16Storage", SafetensorsDtype::kBF16},
      {"torch.LongStorage", SafetensorsDtype::kI64},
      {"torch.IntStorage", SafetensorsDtype::kI32},
      {"torch.ShortStorage", SafetensorsDtype::kI16},
      {"torch.CharStorage", SafetensorsDtype::kI8},
      {"torch.ByteStorage", SafetensorsDtype::kU8},
      {"torch.BoolStorage", SafetensorsDtype::kBool},
  };
  auto it = kStorages.find(global);
  if (it == kStorages.end()) return std::nullopt;
  return it->second;
}

bool AllowedGlobal(const std::string& name) {
  return name == kOrderedDict || name == kRebuildTensor || name == kRebuildParameter ||
         StorageDtype(name).has_value();
}

// The opcodes the interpreter accepts, named as in Python's pickletools.
enum Opcode : uint8_t {
  kProto = 0x80,
  kFrame = 0x95,
  kStop = '.',
  kMark = '(',
  kPop = '0',
  kPopMark = '1',
  kEmptyDict = '}',
  kEmptyTuple = ')',
  kEmptyList = ']',
  kTuple = 't',
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kSetItem = 's',
  kSetItems = 'u',
  kAppend = 'a',
  kAppends = 'e',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kMemoize = 0x94,
  kBinGet = 'h',
  kLongBinGet = 'j',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kBinInt2 = 'M',
  kLong1 = 0x8a,
  kBinFloat = 'G',
  kNone = 'N',
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kBinUnicode = 'X',
  kShortBinUnicode = 0x8c,
  kBinUnicode8 = 0x8d,
  kGlobal = 'c',
  kStackGlobal = 0x93,
  kReduce = 'R',
  kBuild = 'b',
  kBinPersId = 'Q',
};

class Unpickler {
 public:
  Unpickler(std::span<const uint8_t> bytes, const std::string& source)
      : in_(bytes, source + ": refusing to unpickle") {}

  std::vector<TorchTensorRecord> Run();

 private:
  // Semantic errors name the offset of the opcode being run; truncated reads
  // (thrown by in_) name the offset of the read.
  [[noreturn]] void Fail(const std::string& what) const { in_.FailAt(op_pos_, what); }

  size_t New(Object o) {
    if (arena_.size() >= kMaxObjects) Fail("the pickle builds too many objects");
    arena_.push_back(std::move(o));
    return arena_.size() - 1;
  }
  size_t NewOf(Kind kind, int64_t i = 0) {
    Object o;
    o.kind = kind;
    o.i = i;
    return New(std::move(o));
  }
  size_t NewInt(int64_t v) { return NewOf(Kind::kInt, v); }
  size_t NewString(std::string s) {
    Object o;
    o.kind = Kind::kString;
    o.s = std::move(s);
    return New(std::move(o));
  }
  size_t NewTuple(std::vector<size_t> items) {
    Object o;
    o.kind = Kind::kTuple;
    o.items = std::move(items);
    return New(std::move(o));
  }
  void Push(size_t id) { stack_.push_back(id); }
  size_t Pop() {
    if (stack_.size() <= Floor()) Fail("stack underflow");
    size_t id = stack_.back();
    stack_.pop_back();
    return id;
  }
  size_t Top() const {
    if (stack_.size() <= Floor()) Fail("stack underflow");
    return stack_.back();
  }
  // Objects may not be popped from below the innermost mark except by the
  // opcodes that consume it.
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  std::vector<size_t> PopToMark() {
    if (marks_.empty()) Fail("no MARK on the stack");
    std::vector<size_t> items(stack_.begin() + static_cast<ptrdiff_t>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  Object& Get(size_t id) { return arena_[id]; }
  Object& Expect(size_t id, Kind kind, const char* what) {
    if (arena_[id].kind != kind) {
      Fail(std::string(what) + " must be a " + KindName(kind) + ", not a " +
           KindName(arena_[id].kind));
    }
    return arena_[id];
  }
  void Memoize(uint64_t index) {
    if (memo_.size() >= kMaxObjects) Fail("the pickle memoizes too many objects");
    memo_[index] = Top();
  }
  size_t Recall(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) Fail("memo entry " + std::to_string(index) + " was never stored");
    return it->second;
  }

  // One step of Run per opcode group; each returns false for an opcode that
  // is not in its group.
  bool StreamOrStackOp(uint8_t op);
  bool ContainerOp(uint8_t op);
  bool MemoOp(uint8_t op);
  bool ScalarOp(uint8_t op);
  bool ObjectOp(uint8_t op);
  [[noreturn]] void RefuseOpcode(uint8_t op) const;

  int64_t ReadLong1();
  double ReadBinFloat();
  void Global(const std::string& module, const std::string& name);
  void Reduce();
  void Build();
  void PersistentLoad();
  size_t RebuildTensor(const std::vector<size_t>& args);
  void SetItems(size_t dict, const std::vector<size_t>& kv);
  std::vector<int64_t> IntTuple(size_t id, const char* what);
  std::vector<TorchTensorRecord> Result();

  model::ByteCursor in_;
  size_t op_pos_ = 0;
  std::vector<Object> arena_;
  std::vector<size_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, size_t> memo_;
};

void Unpickler::Global(const std::string& module, const std::string& name) {
  std::string full = module + "." + name;
  if (!AllowedGlobal(full)) {
    Fail("forbidden global '" + full +
         "' (only dictionaries of tensors written by torch.save are accepted)");
  }
  Object o;
  o.kind = Kind::kGlobal;
  o.s = full;
  if (auto dtype = StorageDtype(full)) o.dtype = *dtype;
  Push(New(std::move(o)));
}

std::vector<int64_t> Unpickler::IntTuple(size_t id, const char* what) {
  std::vector<int64_t> out;
  for (size_t item : Expect(id, Kind::kTuple, what).items) {
    const Object& o = Get(item);
    if (o.kind != Kind::kInt) Fail(std::string(what) + " holds a " + KindName(o.kind));
    if (o.i < 0) Fail(std::string(what) + " holds the negative value " + std::to_string(o.i));
    out.push_back(o.i);
  }
  return out;
}

size_t Unpickler::RebuildTensor(const std::vector<size_t>& args) {
  if (args.size() != 6 && args.size() != 7) {
    Fail("_rebuild_tensor_v2 takes 6 or 7 arguments, got " + std::to_string(args.size()));
  }
  const Object& storage = Expect(args[0], Kind::kStorage, "a tensor's storage");
  Object tensor;
  tensor.kind = Kind::kTensor;
  TorchTensorRecord& t = tensor.tensor;
  t.storage = storage.s;
  t.dtype = storage.dtype;
  t.storage_elements = static_cast<uint64_t>(storage.i);
  t.offset = Expect(args[1], Kind::kInt, "a tensor's storage offset").i;
  if (t.offset < 0) Fail("a tensor's storage offset is negative");
  t.sizes = IntTuple(args[2], "a tensor's size");
  t.strides = IntTuple(args[3], "a tensor's stride");
  if (t.sizes.size() != t.strides.size()) Fail("a tensor's size and stride differ in length");
  Expect(args[4], Kind::kBool, "a tensor's requires_grad");
  // Backward hooks are Python callables; a state dict never has any.
  if (!Expect(args[5], Kind::kDict, "a tensor's backward hooks").items.empty()) {
    Fail("a tensor carries backward hooks");
  }
  if (args.size() == 7 && Get(args[6]).kind != Kind::kNone && Get(args[6]).kind != Kind::kDict) {
    Fail("a tensor's metadata must be a dict or None");
  }
  return New(std::move(tensor));
}

void Unpickler::Reduce() {
  size_t args_id = Pop();
  size_t callable = Pop();
  const Object& fn = Get(callable);
  if (fn.kind != Kind::kGlobal) Fail(std::string("REDUCE of a ") + KindName(fn.kind));
  std::vector<size_t> args = Expect(args_id, Kind::kTuple, "REDUCE arguments").items;
  if (fn.s == kOrderedDict) {
    if (!args.empty()) Fail("collections.OrderedDict may only be called without arguments");
    Push(NewOf(Kind::kDict));
  } else if (fn.s == kRebuildTensor) {
    Push(RebuildTensor(args));
  } else if (fn.s == kRebuildParameter) {
    // (tensor, requires_grad, backward_hooks): a Parameter is its tensor here.
    if (args.size() != 3) Fail("_rebuild_parameter takes 3 arguments");
    Expect(args[0], Kind::kTensor, "a parameter's data");
    Expect(args[1], Kind::kBool, "a parameter's requires_grad");
    if (!Expect(args[2], Kind::kDict, "a parameter's backward hooks").items.empty()) {
      Fail("a parameter carries backward hooks");
    }
    Push(args[0]);
  } else {
    Fail("forbidden call of '" + fn.s + "'");
  }
}

void Unpickler::Build() {
  size_t state = Pop();
  size_t target = Top();
  // OrderedDict.__reduce__ passes the instance's attributes as state; for a
  // state dict that is {'_metadata': ...}, which only PyTorch itself uses.
  if (Get(target).kind != Kind::kDict || Get(state).kind != Kind::kDict) {
    Fail(std::string("BUILD of a ") + KindName(Get(target).kind) + " with a " +
         KindName(Get(state).kind) + " state");
  }
}

void Unpickler::PersistentLoad() {
  const Object& pid = Expect(Pop(), Kind::kTuple, "a persistent id");
  if (pid.items.size() != 5) Fail("a persistent id must have 5 fields");
  if (Expect(pid.items[0], Kind::kString, "a persistent id's tag").s != "storage") {
    Fail("persistent id tag '" + Get(pid.items[0]).s + "' (only 'storage' is accepted)");
  }
  const Object& type = Expect(pid.items[1], Kind::kGlobal, "a storage type");
  if (!StorageDtype(type.s)) Fail("'" + type.s + "' is not a storage type");
  Object storage;
  storage.kind = Kind::kStorage;
  storage.dtype = type.dtype;
  storage.s = Expect(pid.items[2], Kind::kString, "a storage key").s;
  Expect(pid.items[3], Kind::kString, "a storage location");
  storage.i = Expect(pid.items[4], Kind::kInt, "a storage size").i;
  if (storage.i < 0) Fail("a storage size is negative");
  Push(New(std::move(storage)));
}

void Unpickler::SetItems(size_t dict, const std::vector<size_t>& kv) {
  if (kv.size() % 2 != 0) Fail("SETITEMS with an odd number of objects");
  Object& d = Expect(dict, Kind::kDict, "SETITEM's target");
  d.items.insert(d.items.end(), kv.begin(), kv.end());
}

std::vector<TorchTensorRecord> Unpickler::Result() {
  if (stack_.size() != 1 || !marks_.empty())
    Fail("STOP with " + std::to_string(stack_.size()) + " objects on the stack");
  const Object& dict = Get(stack_.back());
  if (dict.kind != Kind::kDict)
    Fail(std::string("the file holds a ") + KindName(dict.kind) + ", not a dict of tensors");
  std::vector<TorchTensorRecord> out;
  std::set<std::string> names;
  for (size_t k = 0; k < dict.items.size(); k += 2) {
    const Object& key = Get(dict.items[k]);
    const Object& value = Get(dict.items[k + 1]);
    if (key.kind != Kind::kString)
      Fail(std::string("a dict key is a ") + KindName(key.kind) + ", not a str");
    if (value.kind != Kind::kTensor) {
      Fail("the value of '" + key.s + "' is a " + KindName(value.kind) + ", not a tensor");
    }
    if (!names.insert(key.s).second) Fail("the key '" + key.s + "' appears twice");
    out.push_back(value.tensor);
    out.back().name = key.s;
  }
  return out;
}

std::vector<TorchTensorRecord> Unpickler::Run() {
  while (true) {
    op_pos_ = in_.pos();
    uint8_t op = in_.Read<uint8_t>("opcode");
    if (op == kStop) return Result();
    bool done =
        StreamOrStackOp(op) || ContainerOp(op) || MemoOp(op) || ScalarOp(op) || ObjectOp(op);
    if (!done) RefuseOpcode(op);
  }
}

// PROTO and FRAME (read and checked, nothing else), MARK, POP, POP_MARK.
bool Unpickler::StreamOrStackOp(uint8_t op) {
  switch (op) {
    case kProto: {
      uint8_t version = in_.Read<uint8_t>("PROTO version");
      if (version > 5) Fail("pickle protocol " + std::to_string(version) + " is unknown");
      return true;
    }
    case kFrame:
      in_.Read<uint64_t>("FRAME length");  // a hint only
      return true;
    case kMark:
      marks_.push_back(stack_.size());
      return true;
    case kPop:
      Pop();
      return true;
    case kPopMark:
      PopToMark();
      return true;
  }
  return false;
}

// Empty dicts, lists and tuples, tuples from the stack, and filling dicts
// and lists.
bool Unpickler::ContainerOp(uint8_t op) {
  switch (op) {
    case kEmptyDict:
      Push(NewOf(Kind::kDict));
      return true;
    case kEmptyTuple:
      Push(NewTuple({}));
      return true;
    case kEmptyList:
      Push(NewOf(Kind::kList));
      return true;
    case kTuple:
      Push(NewTuple(PopToMark()));
      return true;
    case kTuple1:
    case kTuple2:
    case kTuple3: {
      std::vector<size_t> items(op - kTuple1 + 1);
      for (size_t k = items.size(); k-- > 0;) items[k] = Pop();
      Push(NewTuple(std::move(items)));
      return true;
    }
    case kSetItem: {
      size_t value = Pop(), key = Pop();
      SetItems(Top(), {key, value});
      return true;
    }
    case kSetItems: {
      std::vector<size_t> kv = PopToMark();
      SetItems(Top(), kv);
      return true;
    }
    case kAppend: {
      size_t value = Pop();
      Expect(Top(), Kind::kList, "APPEND's target").items.push_back(value);
      return true;
    }
    case kAppends: {
      std::vector<size_t> values = PopToMark();
      auto& list = Expect(Top(), Kind::kList, "APPENDS' target").items;
      list.insert(list.end(), values.begin(), values.end());
      return true;
    }
  }
  return false;
}

// BINPUT, LONG_BINPUT, MEMOIZE store the top of the stack; BINGET and
// LONG_BINGET push a stored object again.
bool Unpickler::MemoOp(uint8_t op) {
  switch (op) {
    case kBinPut:
      Memoize(in_.Read<uint8_t>("BINPUT index"));
      return true;
    case kLongBinPut:
      Memoize(in_.Read<uint32_t>("LONG_BINPUT index"));
      return true;
    case kMemoize:
      Memoize(memo_.size());
      return true;
    case kBinGet:
      Push(Recall(in_.Read<uint8_t>("BINGET index")));
      return true;
    case kLongBinGet:
      Push(Recall(in_.Read<uint32_t>("LONG_BINGET index")));
      return true;
  }
  return false;
}

// Integers, floats, None, booleans and strings.
bool Unpickler::ScalarOp(uint8_t op) {
  switch (op) {
    case kBinInt:
      Push(NewInt(in_.Read<int32_t>("BININT value")));
      return true;
    case kBinInt1:
      Push(NewInt(in_.Read<uint8_t>("BININT1 value")));
      return true;
    case kBinInt2:
      Push(NewInt(in_.Read<uint16_t>("BININT2 value")));
      return true;
    case kLong1:
      Push(NewInt(ReadLong1()));
      return true;
    case kBinFloat: {
      Object o;
      o.kind = Kind::kFloat;
      o.f = ReadBinFloat();
      Push(New(std::move(o)));
      return true;
    }
    case kNone:
      Push(NewOf(Kind::kNone));
      return true;
    case kNewTrue:
      Push(NewOf(Kind::kBool, 1));
      return true;
    case kNewFalse:
      Push(NewOf(Kind::kBool, 0));
      return true;
    case kBinUnicode:
      Push(NewString(in_.ReadPrefixedString<uint32_t>("BINUNICODE string")));
      return true;
    case kShortBinUnicode:
      Push(NewString(in_.ReadPrefixedString<uint8_t>("SHORT_BINUNICODE string")));
      return true;
    case kBinUnicode8:
      Push(NewString(in_.ReadPrefixedString<uint64_t>("BINUNICODE8 string")));
      return true;
  }
  return false;
}

// GLOBAL and STACK_GLOBAL (only allowed names), REDUCE (only allowed calls),
// BUILD (only attributes of a dict) and BINPERSID (only storages).
bool Unpickler::ObjectOp(uint8_t op) {
  switch (op) {
    case kGlobal: {  // "module\nname\n"
      std::string module = in_.ReadUntil('\n', "GLOBAL module");
      std::string name = in_.ReadUntil('\n', "GLOBAL name");
      Global(module, name);
      return true;
    }
    case kStackGlobal: {
      std::string name = Expect(Pop(), Kind::kString, "STACK_GLOBAL's name").s;
      std::string module = Expect(Pop(), Kind::kString, "STACK_GLOBAL's module").s;
      Global(module, name);
      return true;
    }
    case kReduce:
      Reduce();
      return true;
    case kBuild:
      Build();
      return true;
    case kBinPersId:
      PersistentLoad();
      return true;
  }
  return false;
}

void Unpickler::RefuseOpcode(uint8_t op) const {
  std::string shown = op >= 0x20 && op < 0x7f ? std::string(" '") + char(op) + "'" : "";
  char hex[8];
  std::snprintf(hex, sizeof(hex), "0x%02x", op);
  Fail(std::string("opcode ") + hex + shown +
       " is not allowed (it is not needed by a dictionary of tensors)");
}

// LONG1: a length byte n <= 8, then n bytes of little-endian two's complement.
int64_t Unpickler::ReadLong1() {
  uint8_t n = in_.Read<uint8_t>("LONG1 length");
  if (n > 8) Fail("an integer of " + std::to_string(n) + " bytes is too large");
  std::span<const uint8_t> b = in_.ReadBytes(n, "LONG1 value");
  uint64_t v = 0;
  for (uint8_t k = 0; k < n; ++k) v |= uint64_t{b[k]} << (8 * k);
  if (n > 0 && n < 8 && (b[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);
  return static_cast<int64_t>(v);
}

// BINFLOAT: a big-endian IEEE double (the one big-endian field of a pickle).
double Unpickler::ReadBinFloat() {
  return std::bit_cast<double>(__builtin_bswap64(in_.Read<uint64_t>("BINFLOAT value")));
}

// Largest element index a view touches, or nullopt for an empty view.  A view
// may not hold more elements than its storage: that would take overlapping
// (expanded) strides, which no parameter has and which could turn a tiny
// storage into a huge copy.
std::optional<uint64_t> LastElement(const TorchTensorRecord& t, const std::string& source) {
  auto fail = [&](const std::string& what) {
    throw FormatError(source + ": tensor '" + t.name + "' " + what);
  };
  uint64_t last = static_cast<uint64_t>(t.offset);
  uint64_t elements = 1;
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    if (t.sizes[d] == 0) return std::nullopt;
    uint64_t size = static_cast<uint64_t>(t.sizes[d]), step;
    if (__builtin_mul_overflow(size - 1, static_cast<uint64_t>(t.strides[d]), &step) ||
        __builtin_add_overflow(last, step, &last) ||
        __builtin_mul_overflow(elements, size, &elements)) {
      fail("has a size and stride that overflow");
    }
  }
  if (elements > t.storage_elements) {
    fail("has more elements (" + std::to_string(elements) + ") than its storage (" +
         std::to_string(t.storage_elements) + "); expanded views are not supported");
  }
  return last;
}

std::string ShapeString(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t k = 0; k < v.size(); ++k) s += (k ? ", " : "") + std::to_string(v[k]);
  return s + "]";
}

}  // namespace

std::vector<TorchTensorRecord> UnpickleTensorDict(std::span<const uint8_t> pickle,
                                                  const std::string& source) {
  return Unpickler(pickle, source).Run();
}

namespace {

[[noreturn]] void LegacyFormat(const std::string& source) {
  throw FormatError(source +
                    ": this is the legacy (before PyTorch 1.6) torch.save format, "
                    "which is not supported; load it in Python and save it again with torch.save");
}

TorchCheckpoint Validate(ZipArchive archive) {
  TorchCheckpoint ckpt;
  ckpt.archive = std::move(archive);
  const ZipArchive& zip = ckpt.archive;
  const std::string& source = zip.source();

  // The pickle sits at <a>/data.pkl, <a> being the archive's one top folder.
  std::string prefix;
  for (const ZipEntry& e : zip.entries()) {
    size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.substr(slash) == "/data.pkl") {
      if (!prefix.empty()) throw FormatError(source + ": the archive holds more than one data.pkl");
      prefix = e.name.substr(0, slash + 1);
    }
  }
  if (prefix.empty()) {
    throw FormatError(source + ": no <name>/data.pkl in the archive (not a torch.save file?)");
  }
  if (const ZipEntry* order = zip.Find(prefix + "byteorder")) {
    std::span<const uint8_t> b = zip.Read(*order);
    if (std::string_view(reinterpret_cast<const char*>(b.data()), b.size()) != "little") {
      throw FormatError(source + ": the tensors are stored big-endian, which is not supported");
    }
  }
  ckpt.tensors = UnpickleTensorDict(zip.Read(*zip.Find(prefix + "data.pkl")), source);

  std::map<std::string, std::pair<SafetensorsDtype, uint64_t>> storage_types;
  for (const TorchTensorRecord& t : ckpt.tensors) {
    auto [it, fresh] =
        storage_types.emplace(t.storage, std::make_pair(t.dtype, t.storage_elements));
    if (!fresh && it->second != std::make_pair(t.dtype, t.storage_elements)) {
      throw FormatError(source + ": storage '" + t.storage +
                        "' is described with two different types or sizes");
    }
    if (fresh) {
      const ZipEntry* entry = zip.Find(prefix + "data/" + t.storage);
      if (entry == nullptr) {
        throw FormatError(source + ": tensor '" + t.name + "' refers to storage '" + t.storage +
                          "', which the archive does not contain");
      }
      std::span<const uint8_t> data = zip.Read(*entry);
      uint64_t want;
      if (__builtin_mul_overflow(t.storage_elements, model::DtypeSize(t.dtype), &want) ||
          want != data.size()) {
        throw FormatError(source + ": storage '" + t.storage + "' holds " +
                          std::to_string(data.size()) + " bytes, not " +
                          std::to_string(t.storage_elements) + " elements of " +
                          model::DtypeName(t.dtype));
      }
      ckpt.storages.emplace(t.storage, data);
    }
    std::optional<uint64_t> last = LastElement(t, source);
    if (last && *last >= t.storage_elements) {
      throw FormatError(source + ": tensor '" + t.name + "' (size " + ShapeString(t.sizes) +
                        ", stride " + ShapeString(t.strides) + ", offset " +
                        std::to_string(t.offset) + ") reaches beyond its storage of " +
                        std::to_string(t.storage_elements) + " elements");
    }
  }
  return ckpt;
}

}  // namespace

TorchCheckpoint ParseTorchCheckpoint(std::span<const uint8_t> bytes, const std::string& source) {
  if (!bytes.empty() && bytes[0] == 0x80) LegacyFormat(source);
  return Validate(ZipArchive::Parse(bytes, source));
}

TorchCheckpoint ReadTorchCheckpoint(const std::string& path) {
  std::optional<ZipArchive> zip;
  try {
    zip = ZipArchive::Open(path);
  } catch (const FormatError&) {
    // A legacy file is a bare pickle: it starts with PROTO (0x80).
    std::ifstream in(path, std::ios::binary);
    if (in.get() == 0x80) LegacyFormat(path);
    throw;
  }
  return Validate(std::move(*zip));
}

}  // namespace diablo::peft
