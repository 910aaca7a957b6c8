"""Reference side of reference_import_test: writes adapters the way the
paper's reference implementation saves them (torch.save of a dict from
"<module path>.block_A" to [N_eff, b_in, b_out] tensors in the model's dtype),
plus the values and outputs the C++ import must reproduce.

  make_reference_adapter.py <output dir> <marker path>

Writes into <output dir>:
  base.safetensors      base weights of a 2-layer model with Llama names
                        (hidden 16, kv 8, mlp 24, no biases)
  adapter.chkpt         a plain dict (as the reference trainer saves it) with
                        N = 5 adapters on q_proj, v_proj, down_proj: bf16
                        tensors that are contiguous, transposed, offset into a
                        larger storage, sliced with a step, or sharing one
                        storage, and one fp32 tensor
  state_dict.chkpt      the same values as nn.Module.state_dict() saves them
                        (an OrderedDict with _metadata)
  parameters.chkpt      the same values as a dict of nn.Parameters
  expected.safetensors  "A:<path>" fp32 values, "x:<path>" inputs and
                        "y:<path>" = x W^T + x blockdiag(A)[:in, :out]
  evil.chkpt            a torch.save file whose pickle calls os.system to
                        create <marker path> when unpickled by Python
"""
import math
import os
import sys

import torch
from safetensors.torch import save_file

HIDDEN, KV, MLP, LAYERS, N = 16, 8, 24, 2, 5
SHAPES = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (KV, HIDDEN),
          "self_attn.v_proj": (KV, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
          "mlp.gate_proj": (MLP, HIDDEN), "mlp.up_proj": (MLP, HIDDEN),
          "mlp.down_proj": (HIDDEN, MLP)}
TARGETS = ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]


def layout(in_features, out_features, n):
    b_in, b_out = math.ceil(in_features / n), math.ceil(out_features / n)
    return max(math.ceil(in_features / b_in), math.ceil(out_features / b_out)), b_in, b_out


def adapters(g):
    """Adapter tensors in several storage arrangements, keyed by module path."""
    shapes = {}
    for i in range(LAYERS):
        for t in TARGETS:
            out_f, in_f = SHAPES[t]
            shapes[f"model.layers.{i}.{t}"] = layout(in_f, out_f, N)
    paths = list(shapes)
    out = {}
    n, bi, bo = shapes[paths[0]]
    out[paths[0]] = (torch.randn(n, bi, bo, generator=g) * 0.1).bfloat16()
    n, bi, bo = shapes[paths[1]]
    out[paths[1]] = (torch.randn(bo, bi, n, generator=g) * 0.1).bfloat16().permute(2, 1, 0)
    n, bi, bo = shapes[paths[2]]
    big = (torch.randn(1000, generator=g) * 0.1).bfloat16()
    out[paths[2]] = big[37:37 + n * bi * bo].view(n, bi, bo)
    n, bi, bo = shapes[paths[3]]
    out[paths[3]] = (torch.randn(n, bi, 2 * bo, generator=g) * 0.1)[..., ::2]  # fp32, stepped
    (n4, bi4, bo4), (n5, bi5, bo5) = shapes[paths[4]], shapes[paths[5]]
    shared = (torch.randn(n4 * bi4 * bo4 + n5 * bi5 * bo5 + 3, generator=g) * 0.1).bfloat16()
    out[paths[4]] = shared[: n4 * bi4 * bo4].view(n4, bi4, bo4)
    out[paths[5]] = shared[n4 * bi4 * bo4 + 3:].view(n5, bi5, bo5)
    return out


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch '" + self.marker + "'",))


def main(out_dir, marker):
    g = torch.Generator().manual_seed(5)
    base = {f"model.layers.{i}.{name}.weight": torch.randn(*shape, generator=g) * 0.3
            for i in range(LAYERS) for name, shape in SHAPES.items()}
    save_file(base, os.path.join(out_dir, "base.safetensors"))

    a = adapters(g)
    torch.save({p + ".block_A": t for p, t in a.items()}, os.path.join(out_dir, "adapter.chkpt"))

    holder = torch.nn.Module()
    for path, t in a.items():
        parent = holder
        for part in path.split("."):
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        parent.register_parameter("block_A", torch.nn.Parameter(t.contiguous().clone()))
    torch.save(holder.state_dict(), os.path.join(out_dir, "state_dict.chkpt"))
    torch.save(dict(holder.named_parameters()), os.path.join(out_dir, "parameters.chkpt"))

    expected = {}
    for path, t in a.items():
        A = t.double()
        weight = base[path + ".weight"].double()
        out_f, in_f = weight.shape
        dense = torch.block_diag(*A)[:in_f, :out_f]  # [in, out], zero off the diagonal blocks
        x = torch.randn(2, 3, in_f, generator=g)
        expected["A:" + path] = t.float().contiguous()
        expected["x:" + path] = x
        expected["y:" + path] = (x.double() @ weight.T + x.double() @ dense).float()
    save_file(expected, os.path.join(out_dir, "expected.safetensors"))

    torch.save({"model.layers.0.self_attn.q_proj.block_A": Evil(marker)},
               os.path.join(out_dir, "evil.chkpt"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
