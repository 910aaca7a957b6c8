"""Independent reference outputs from Hugging Face transformers for the model
parity tests.  Writes token ids / logits / generations as raw little-endian
arrays plus a JSON index into an output directory; the C++ tests compare.

  hf_reference.py tiny --arch llama|qwen2|gqa|llama31 --out DIR
      a small random model saved with save_pretrained (safetensors) to DIR/model
  hf_reference.py gguf --model FILE.gguf --out DIR [--prompts-file F] [--new-tokens 32]
      transformers loading the same GGUF file (dequantised by the gguf package)
  hf_reference.py dequant --model FILE.gguf --out DIR
      a few tensors dequantised by the gguf package
"""
import argparse
import json
import os
import sys

import numpy as np
import torch


def save(out, index, name, array, dtype):
    array = np.ascontiguousarray(np.asarray(array, dtype=dtype))
    array.tofile(os.path.join(out, name + ".bin"))
    index[name] = {"shape": list(array.shape), "dtype": str(array.dtype)}


def tiny(args, index):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1234)
    common = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False)
    if args.arch == "llama":
        config = LlamaConfig(num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0, **common)
        model = LlamaForCausalLM(config)
    elif args.arch == "gqa":
        common["tie_word_embeddings"] = True
        config = LlamaConfig(num_attention_heads=8, num_key_value_heads=2, rope_theta=500000.0, **common)
        model = LlamaForCausalLM(config)
    elif args.arch == "llama31":
        config = LlamaConfig(num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0,
                             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                             **common)
        model = LlamaForCausalLM(config)
    elif args.arch == "qwen2":
        config = Qwen2Config(num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0, **common)
        model = Qwen2ForCausalLM(config)
    else:
        sys.exit("unknown --arch " + args.arch)
    # Random init leaves norms at one and biases at zero; perturb every
    # parameter so that a loader mixing them up cannot pass.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    model.save_pretrained(os.path.join(args.out, "model"), safe_serialization=True)
    ids = torch.randint(0, config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = model(ids).logits
    save(args.out, index, "input_ids", ids.numpy(), np.int64)
    save(args.out, index, "logits", logits.numpy(), np.float32)


def from_gguf(args, index):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = os.path.split(os.path.abspath(args.model))
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    model.eval()
    with open(args.prompts_file, encoding="utf-8") as f:
        prompts = [line.rstrip("\n") for line in f if line.strip()]
    index["prompts"] = len(prompts)
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits[0]
            generated = model.generate(ids, max_new_tokens=args.new_tokens, do_sample=False,
                                       eos_token_id=None, pad_token_id=tokenizer.eos_token_id)
        save(args.out, index, f"ids_{i}", ids[0].numpy(), np.int64)
        save(args.out, index, f"logits_{i}", logits.numpy(), np.float32)
        save(args.out, index, f"greedy_{i}", generated[0, ids.shape[1]:].numpy(), np.int64)


def dequant(args, index):
    import gguf

    reader = gguf.GGUFReader(args.model)
    wanted = {}
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        if kind not in wanted:  # first tensor of each type
            wanted[kind] = tensor
    for kind, tensor in wanted.items():
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        save(args.out, index, f"dequant_{kind}", values.reshape(-1), np.float32)
        index[f"dequant_{kind}"]["tensor"] = tensor.name
    # Types the model file lacks, made here with gguf's own quantiser.
    rng = np.random.default_rng(3)
    source = rng.standard_normal(4 * 64).astype(np.float32)
    for kind in ("Q4_0", "Q8_0", "Q4_1", "F16", "BF16"):
        qtype = gguf.GGMLQuantizationType[kind]
        try:
            packed = gguf.quants.quantize(source.reshape(4, 64), qtype)
        except (NotImplementedError, gguf.quants.QuantError):
            continue
        packed.tofile(os.path.join(args.out, f"packed_{kind}.raw"))
        save(args.out, index, f"synthetic_{kind}", gguf.quants.dequantize(packed, qtype).reshape(-1),
             np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("mode", choices=["tiny", "gguf", "dequant"])
    parser.add_argument("--arch", default="llama")
    parser.add_argument("--model")
    parser.add_argument("--prompts-file")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    index = {}
    {"tiny": tiny, "gguf": from_gguf, "dequant": dequant}[args.mode](args, index)
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
