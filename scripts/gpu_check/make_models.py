#!/usr/bin/env python3
"""Writes the models scripts/gpu-check.sh trains, into OUT_DIR:

  tiny-llama/            a small random Llama as a Hugging Face directory
                         (config.json, model.safetensors, a byte-level BPE
                         tokenizer.json with a few merges and the ChatML
                         markers, tokenizer_config.json with a ChatML
                         template)
  tiny-llama-q4_1.gguf   the same model as GGUF: projections, embeddings and
                         lm_head quantised to Q4_1 by the gguf package, norms
                         F32, the tokenizer in the metadata
  shapes/<name>/config.json
                         the config.json of Llama 3.2 1B, 3.2 3B and 3.1 8B
                         (shapes only: the throughput benchmark fills them
                         with random weights on the GPU)

Needs torch, safetensors, numpy and gguf (the test venv).  Random weights
come from a fixed seed, so two preparations write the same files.

Usage: make_models.py OUT_DIR
"""
import json
import sys
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.torch import save_file

# Small enough that 20 CPU steps take seconds, wide enough (multiples of 32)
# for Q4_1 rows, with grouped-query attention as in the real models.
TINY = {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
        "num_attention_heads": 8, "num_key_value_heads": 4}
IM_START, IM_END = 256, 257
# A few merges of frequent pairs in the demo data (dates, English), so both
# tokenizers run real BPE; their tokens follow the markers.
MERGES = [("1", "9"), ("2", "0"), ("0", "1"), ("e", "r")]
VOCAB = 258 + len(MERGES)  # 256 bytes, <|im_start|>, <|im_end|>, the merged tokens
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")

# Published shapes (Hugging Face config.json of meta-llama/Llama-3.2-1B,
# Llama-3.2-3B and Llama-3.1-8B), trimmed to what a Llama config needs.
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
SHAPES = {
    "llama-3.2-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
                     "tie_word_embeddings": True, "rope_scaling": LLAMA3_ROPE},
    "llama-3.2-3b": {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
                     "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
                     "tie_word_embeddings": True, "rope_scaling": LLAMA3_ROPE},
    "llama-3.1-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                     "tie_word_embeddings": False, "rope_scaling": dict(LLAMA3_ROPE, factor=8.0)},
}


def byte_level_char(b):
    """GPT-2's byte-to-unicode map, which byte-level BPE vocabularies use."""
    printable = lambda c: 33 <= c <= 126 or 161 <= c <= 172 or c >= 174  # noqa: E731
    if printable(b):
        return chr(b)
    return chr(256 + sum(1 for c in range(b) if not printable(c)))


def tiny_config():
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB,
            **TINY, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": False, "bos_token_id": None, "eos_token_id": IM_END,
            "torch_dtype": "float32"}


def tiny_weights():
    """HF names -> fp32 tensors: normal(0, 0.02) as transformers initialises, norms near one."""
    g = torch.Generator().manual_seed(20261130)
    h, m = TINY["hidden_size"], TINY["intermediate_size"]
    head_dim = h // TINY["num_attention_heads"]
    kv = TINY["num_key_value_heads"] * head_dim
    randn = lambda *shape: torch.randn(*shape, generator=g) * 0.02  # noqa: E731
    w = {"model.embed_tokens.weight": randn(VOCAB, h), "lm_head.weight": randn(VOCAB, h),
         "model.norm.weight": 1 + 0.1 * randn(h)}
    for i in range(TINY["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w.update({p + "self_attn.q_proj.weight": randn(h, h), p + "self_attn.k_proj.weight": randn(kv, h),
                  p + "self_attn.v_proj.weight": randn(kv, h), p + "self_attn.o_proj.weight": randn(h, h),
                  p + "mlp.gate_proj.weight": randn(m, h), p + "mlp.up_proj.weight": randn(m, h),
                  p + "mlp.down_proj.weight": randn(h, m),
                  p + "input_layernorm.weight": 1 + 0.1 * randn(h),
                  p + "post_attention_layernorm.weight": 1 + 0.1 * randn(h)})
    return {k: v.contiguous() for k, v in w.items()}


def write_hf(directory, weights):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(tiny_config(), indent=2))
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    vocab = {byte_level_char(b): b for b in range(256)}
    vocab.update({"<|im_start|>": IM_START, "<|im_end|>": IM_END})
    vocab.update({a + b: 258 + i for i, (a, b) in enumerate(MERGES)})
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, t in ((IM_START, "<|im_start|>"), (IM_END, "<|im_end|>"))]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True}
    tokenizer = {"version": "1.0", "added_tokens": added, "normalizer": None,
                 "pre_tokenizer": byte_level,
                 "post_processor": byte_level, "decoder": byte_level,
                 "model": {"type": "BPE", "vocab": vocab, "merges": [f"{a} {b}" for a, b in MERGES]}}
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "chat_template": CHATML}, indent=2))


def permute_rotary(weight, heads):
    """HF -> GGUF row order of q/k (llama.cpp's convert_hf_to_gguf permute)."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def write_gguf(path, weights):
    c = tiny_config()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("gpu-check tiny llama")
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_embedding_length(c["hidden_size"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_head_count(c["num_attention_heads"])
    writer.add_head_count_kv(c["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(c["rms_norm_eps"])
    writer.add_rope_freq_base(c["rope_theta"])
    writer.add_vocab_size(VOCAB)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list([byte_level_char(b) for b in range(256)] + ["<|im_start|>", "<|im_end|>"] +
                          [a + b for a, b in MERGES])
    writer.add_token_types([gguf.TokenType.NORMAL] * 256 + [gguf.TokenType.CONTROL] * 2 +
                           [gguf.TokenType.NORMAL] * len(MERGES))
    writer.add_token_merges([f"{a} {b}" for a, b in MERGES])
    writer.add_eos_token_id(IM_END)
    writer.add_chat_template(CHATML)

    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}
    for hf_name, tensor in weights.items():
        data = tensor.numpy().astype(np.float32)
        if hf_name == "model.embed_tokens.weight":
            name = "token_embd.weight"
        elif hf_name == "lm_head.weight":
            name = "output.weight"
        elif hf_name == "model.norm.weight":
            name = "output_norm.weight"
        else:
            layer, rest = hf_name[len("model.layers."):].split(".", 1)
            name = f"blk.{layer}.{names[rest[:-len('.weight')]]}.weight"
            if rest.startswith("self_attn.q_proj"):
                data = permute_rotary(data, c["num_attention_heads"])
            elif rest.startswith("self_attn.k_proj"):
                data = permute_rotary(data, c["num_key_value_heads"])
        if data.ndim == 1:
            writer.add_tensor(name, data)
        else:
            qtype = gguf.GGMLQuantizationType.Q4_1
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_shapes(directory):
    for name, shape in SHAPES.items():
        d = directory / name
        d.mkdir(parents=True, exist_ok=True)
        config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
                  "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                  "bos_token_id": 128000, "eos_token_id": 128001, "torch_dtype": "bfloat16", **shape}
        (d / "config.json").write_text(json.dumps(config, indent=2))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    weights = tiny_weights()
    write_hf(out / "tiny-llama", weights)
    write_gguf(out / "tiny-llama-q4_1.gguf", weights)
    write_shapes(out / "shapes")


if __name__ == "__main__":
    main()
