"""Independent reference for the parameter estimator on a GGUF file: counts
from the tensor directory as the gguf package reads it (not from the
metadata the estimator uses), and DiaBlo / LoRA counts from each stored
projection's shape.

  estimate_reference.py FILE.gguf BLOCKS RANK   prints one JSON object
"""
import json
import sys

import gguf

# llama.cpp tensor names -> Hugging Face module names.
PROJECTIONS = {"attn_q": "q_proj", "attn_k": "k_proj", "attn_v": "v_proj",
               "attn_output": "o_proj", "ffn_gate": "gate_proj", "ffn_up": "up_proj",
               "ffn_down": "down_proj", "output": "lm_head"}


def ceil_div(a, b):
    return -(-a // b)


def diablo(n_in, n_out, blocks):
    b_in, b_out = ceil_div(n_in, blocks), ceil_div(n_out, blocks)
    return max(ceil_div(n_in, b_in), ceil_div(n_out, b_out)) * b_in * b_out


def main():
    path, blocks, rank = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    reader = gguf.GGUFReader(path)
    result = {"parameters": 0, "bytes": 0, "diablo": {}, "lora": {}, "layers": {}}
    for t in reader.tensors:
        result["parameters"] += int(t.n_elements)
        result["bytes"] += int(t.n_bytes)
        parts = t.name.split(".")  # blk.<i>.<kind>.weight or output.weight
        kind = parts[-2] if len(parts) >= 2 else ""
        if parts[-1] != "weight" or kind not in PROJECTIONS:
            continue
        n_in, n_out = int(t.shape[0]), int(t.shape[1])  # ggml order: innermost first
        name = PROJECTIONS[kind]
        result["diablo"][name] = result["diablo"].get(name, 0) + diablo(n_in, n_out, blocks)
        result["lora"][name] = result["lora"].get(name, 0) + rank * (n_in + n_out)
        result["layers"][name] = result["layers"].get(name, 0) + 1
    print(json.dumps(result))


if __name__ == "__main__":
    main()
