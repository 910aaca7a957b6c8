"""Reference side of safetensors_python_test: the `safetensors` package.

  write <file> <expected.json>  writes tensors of many dtypes with the
                                reference writer and, in expected.json, each
                                tensor's dtype, shape and bytes (hex, from
                                torch) for the C++ reader to compare against.
  check <file>                  reads a file written by our C++ writer and
                                exits non-zero unless it holds exactly the
                                tensors safetensors_python_test wrote.
"""
import json
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

DTYPE_NAMES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def write(path, expected_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "model.layers.0.self_attn.q_proj.block_A": torch.randn(4, 3, 2, generator=g),
        "half": torch.randn(5, generator=g).half(),
        "bf": torch.randn(2, 3, generator=g).bfloat16(),
        "double": torch.randn(3, generator=g).double(),
        "long": torch.tensor([-3, 0, 7, 1 << 40]),
        "int": torch.arange(-4, 4, dtype=torch.int32).reshape(2, 4),
        "short": torch.tensor([-300, 300], dtype=torch.int16),
        "char": torch.tensor([-5, 5], dtype=torch.int8),
        "byte": torch.arange(7, dtype=torch.uint8),
        "flag": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    save_file(tensors, path, metadata={"format": "pt", "origin": "python"})
    expected = {
        name: {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
               "hex": t.contiguous().view(torch.uint8).numpy().tobytes().hex() if t.dim() else
                      t.reshape(1).view(torch.uint8).numpy().tobytes().hex()}
        for name, t in tensors.items()
    }
    with open(expected_path, "w") as f:
        json.dump(expected, f)


def check(path):
    got = load_file(path)
    want = {
        "w": torch.tensor([[-1.0, -0.5, 0.0], [0.5, 1.0, 1.5]]),
        "long": torch.tensor([-3, 0, 7, 1 << 40]),
        "bf": torch.tensor([1.0, -2.0, 3.0], dtype=torch.bfloat16),
        "half": torch.tensor([1.0, -5.0], dtype=torch.float16),
        "mask": torch.tensor([1, 2, 3, 4, 5], dtype=torch.uint8),
        "flag": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
    }
    errors = []
    if sorted(got) != sorted(want):
        errors.append(f"names {sorted(got)} != {sorted(want)}")
    for name, t in want.items():
        g = got.get(name)
        if g is None or g.dtype != t.dtype or g.shape != t.shape or not torch.equal(g, t):
            errors.append(f"{name}: got {g!r}, want {t!r}")
    with safe_open(path, "pt") as f:
        if f.metadata() != {"format": "pt", "who": "diablo"}:
            errors.append(f"metadata {f.metadata()}")
    if errors:
        print("\n".join(errors))
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "check":
        check(sys.argv[2])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
