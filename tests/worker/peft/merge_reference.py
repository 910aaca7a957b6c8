"""Independent references for the merge tests (tests/merge/): Hugging Face
transformers and PEFT, and DiaBlo written out from the method's definition.

  merge_reference.py tiny --arch llama|gqa|qwen2|llama31 --method diablo|lora --out DIR
      DIR/model      a small random model (tests/worker/model/hf_reference.py's) with
                     tokenizer files, a chat template and generation_config.json
      DIR/adapter    a random, non-zero adapter for it: DiaBlo block_A tensors
                     in our layout, or a LoRA adapter written by PEFT
      DIR/input_ids.bin, DIR/adapted_logits.bin
                     logits of the model running the adapter beside the frozen
                     weights, unmerged (DiaBlo by forward hooks, LoRA by PEFT)
      DIR/merged_state.safetensors
                     the merged weights computed densely in fp32
                     (W += blockdiag(A)[:in, :out]^T; PEFT's merge for LoRA)
  merge_reference.py check --ref DIR --merged OUT --method M --dtype float32|bfloat16|float16
      OUT loads in transformers (AutoModelForCausalLM, AutoTokenizer) with no
      missing or unexpected keys; its tensors are exactly the base model's
      names in the dtype asked for, equal to merged_state; in fp32 its logits
      equal adapted_logits to 1e-5.  Exits 1 naming every problem.
  merge_reference.py logits --model DIR --ids IDS.json --out LOGITS.bin
      transformers' logits (fp32) for each id row in IDS.json, rows one after
      the other ([total tokens, vocab]); exits 1 when loading reports missing
      or unexpected keys.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "model"))
import hf_reference  # noqa: E402  (the tiny model builder shared with the parity tests)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DIABLO_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DIABLO_BLOCKS = 7  # divides none of the tiny sizes: exercises padding and N_eff


def block_layout(in_features, out_features, n):
    b_in, b_out = math.ceil(in_features / n), math.ceil(out_features / n)
    n_eff = max(math.ceil(in_features / b_in), math.ceil(out_features / b_out))
    return n_eff, b_in, b_out


def diablo_delta(x, a, out_features):
    """The adapter's output for input x: pad, per-block product, flatten, cut."""
    n, b_in, b_out = a.shape
    xp = F.pad(x, (0, n * b_in - x.shape[-1]))
    z = torch.einsum("...ni,nio->...no", xp.view(*x.shape[:-1], n, b_in), a)
    return z.reshape(*x.shape[:-1], n * b_out)[..., :out_features]


def write_tokenizer(directory, vocab_size):
    """Small tokenizer files: merge must copy them byte for byte."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(os.path.join(directory, "tokenizer.json"))
    template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "t0",
                   "eos_token": "t1", "model_max_length": 128}, f, indent=1)
    with open(os.path.join(directory, "special_tokens_map.json"), "w") as f:
        json.dump({"unk_token": "t0", "eos_token": "t1"}, f, indent=1)
    with open(os.path.join(directory, "chat_template.jinja"), "w") as f:
        f.write(template)


def tiny(args):
    index = {}
    hf_reference.tiny(argparse.Namespace(arch=args.arch, out=args.out), index)
    model_dir = os.path.join(args.out, "model")
    write_tokenizer(model_dir, 97)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.from_numpy(np.fromfile(os.path.join(args.out, "input_ids.bin"), dtype=np.int64))
    ids = ids.view(index["input_ids"]["shape"])
    adapter_dir = os.path.join(args.out, "adapter")
    gen = torch.Generator().manual_seed(99)
    if args.method == "diablo":
        tensors, hooks = {}, []
        merged = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or name.split(".")[-1] not in DIABLO_TARGETS:
                continue
            shape = block_layout(module.in_features, module.out_features, DIABLO_BLOCKS)
            a = torch.randn(shape, generator=gen) * 0.05
            tensors[name + ".block_A"] = a
            hooks.append(module.register_forward_hook(
                lambda m, inputs, output, a=a: output + diablo_delta(inputs[0], a, m.out_features)))
            dense = torch.block_diag(*a)[: module.in_features, : module.out_features]
            merged[name + ".weight"] = merged[name + ".weight"] + dense.T
        from safetensors.torch import save_file
        os.makedirs(adapter_dir, exist_ok=True)
        save_file(tensors, os.path.join(adapter_dir, "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        with open(os.path.join(adapter_dir, "adapter_config.json"), "w") as f:
            json.dump({"peft_type": "DIABLO", "method": "diablo", "num_blocks": DIABLO_BLOCKS,
                       "target_modules": DIABLO_TARGETS, "dropout": 0.0,
                       "task_type": "CAUSAL_LM"}, f, indent=1)
        with torch.no_grad():
            logits = model(ids).logits
    else:
        from peft import LoraConfig, get_peft_model
        torch.manual_seed(5)
        config = LoraConfig(r=4, lora_alpha=6, lora_dropout=0.0, init_lora_weights=False,
                            target_modules=["q_proj", "v_proj", "o_proj", "up_proj"])
        peft_model = get_peft_model(model, config).eval()
        with torch.no_grad():
            logits = peft_model(ids).logits
        peft_model.save_pretrained(adapter_dir)
        merged = {k: v.detach().clone()
                  for k, v in peft_model.merge_and_unload().state_dict().items()}
    if model.config.tie_word_embeddings:
        merged.pop("lm_head.weight", None)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in merged.items()},
              os.path.join(args.out, "merged_state.safetensors"))
    logits.numpy().astype(np.float32).tofile(os.path.join(args.out, "adapted_logits.bin"))
    index["adapted_logits"] = {"shape": list(logits.shape)}
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)


def read_merged_tensors(directory, problems):
    from safetensors import safe_open
    index_path = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
        files = sorted(set(index["weight_map"].values()))
    else:
        index, files = None, ["model.safetensors"]
    tensors = {}
    for name in files:
        with safe_open(os.path.join(directory, name), framework="pt") as f:
            if (f.metadata() or {}).get("format") != "pt":
                problems.append(f"{name}: metadata format is not 'pt'")
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
                if index is not None and index["weight_map"].get(key) != name:
                    problems.append(f"index names {index['weight_map'].get(key)} for {key}, "
                                    f"found in {name}")
    if index is not None:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        if index["metadata"]["total_size"] != total:
            problems.append(f"index total_size {index['metadata']['total_size']} != {total}")
        if set(index["weight_map"]) != set(tensors):
            problems.append("index weight_map and the shards name different tensors")
    return tensors


def check(args):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    problems = []
    dtype = DTYPES[args.dtype]
    with open(os.path.join(args.merged, "config.json")) as f:
        config = json.load(f)
    if config.get("torch_dtype", config.get("dtype")) != args.dtype:
        problems.append(f"config.json dtype is {config.get('torch_dtype')}, want {args.dtype}")

    reference = load_file(os.path.join(args.ref, "merged_state.safetensors"))
    tensors = read_merged_tensors(args.merged, problems)
    if set(tensors) != set(reference):
        problems.append(f"tensor names differ: extra {sorted(set(tensors) - set(reference))}, "
                        f"missing {sorted(set(reference) - set(tensors))}")
    for name in sorted(set(tensors) & set(reference)):
        got, want = tensors[name], reference[name].to(dtype)
        if got.dtype != dtype:
            problems.append(f"{name}: dtype {got.dtype}, want {dtype}")
            continue
        # fp32: the same sums.  bf16 / fp16: the fp32 merge rounded once, so a
        # DiaBlo merge (one addition per element) is bit-exact; LoRA's matrix
        # product may sum in another order and land one unit off.
        diff = (got.float() - want.float()).abs()
        if dtype == torch.float32:
            limit = torch.full_like(diff, 1e-6)
        elif args.method == "diablo":
            limit = torch.zeros_like(diff)
        else:
            limit = want.float().abs() * torch.finfo(dtype).eps
        if (diff > limit).any():
            problems.append(f"{name}: differs from the reference merge by {diff.max().item():.3g}")

    model, info = AutoModelForCausalLM.from_pretrained(args.merged, dtype=torch.float32,
                                                       output_loading_info=True)
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(key):
            problems.append(f"transformers reports {key}: {sorted(info[key])[:5]}")
    # transformers may pick a tokenizer class by model_type; whatever it does
    # with the source directory it must do with ours.
    texts = ["t3 t5 t7", "t1t2 t96 x"]
    source_tok = AutoTokenizer.from_pretrained(os.path.join(args.ref, "model"))
    merged_tok = AutoTokenizer.from_pretrained(args.merged)
    if type(merged_tok) is not type(source_tok) or \
            [merged_tok(t)["input_ids"] for t in texts] != [source_tok(t)["input_ids"] for t in texts]:
        problems.append("the copied tokenizer does not load as the source's")
    if dtype == torch.float32:
        with open(os.path.join(args.ref, "index.json")) as f:
            index = json.load(f)
        ids = torch.from_numpy(np.fromfile(os.path.join(args.ref, "input_ids.bin"), dtype=np.int64))
        ids = ids.view(index["input_ids"]["shape"])
        expected = np.fromfile(os.path.join(args.ref, "adapted_logits.bin"), dtype=np.float32)
        with torch.no_grad():
            logits = model.eval()(ids).logits.numpy()
        diff = float(np.abs(logits.reshape(-1) - expected).max())
        print(f"max |logits - adapted logits| = {diff:.3g}")
        if not diff <= 1e-5:
            problems.append(f"merged logits differ from the adapted model's by {diff}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)


def logits(args):
    from transformers import AutoModelForCausalLM
    model, info = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32,
                                                       output_loading_info=True)
    problems = [f"{k}: {sorted(v)[:5]}" for k, v in info.items() if v and k != "error_msgs"]
    if problems:
        sys.exit("transformers reports " + "; ".join(problems))
    with open(args.ids) as f:
        rows = json.load(f)
    with torch.no_grad():  # one row at a time: rows may differ in length
        out = [model.eval()(torch.tensor([row], dtype=torch.long)).logits[0] for row in rows]
    torch.cat(out).numpy().astype(np.float32).tofile(args.out)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("mode", choices=["tiny", "check", "logits"])
    parser.add_argument("--arch", default="llama")
    parser.add_argument("--method", default="diablo", choices=["diablo", "lora"])
    parser.add_argument("--ref")
    parser.add_argument("--merged")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--model")
    parser.add_argument("--ids")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.mode == "tiny":
        os.makedirs(args.out, exist_ok=True)
    {"tiny": tiny, "check": check, "logits": logits}[args.mode](args)


if __name__ == "__main__":
    main()
