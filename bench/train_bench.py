#!/usr/bin/env python3
"""Training throughput and peak memory: `diablo train` against a Python baseline.

Both fine-tune the same model (SmolLM2-135M-Instruct from its Q4_1 GGUF,
dequantised to fp32) with DiaBlo on the same targets and blocks, the same
token sequences (a text dataset packed into sequences of exactly SEQ tokens,
so no padding on either side), the same batch, AdamW, fp32 on CPU, the same
number of threads.  The baseline is Hugging Face transformers with the
block-diagonal update written as an einsum, as the DiaBlo paper describes:

    z = einsum("...ni,nio->...no", pad(x).view(..., N, b_in), A).flatten(-2)[..., :out]

added to each frozen target Linear's output through a forward hook.

Throughput counts the input tokens of every step after the first (warm-up),
divided by the time those steps took; peak memory is each process's peak
resident set size.  Run with the test venv's Python:

    ~/.cache/diablo/venv/bin/python bench/train_bench.py [--steps 6] [--threads 2]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("DIABLO_CACHE", os.path.expanduser("~/.cache/diablo"))
MODEL = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


def write_text_dataset(path, count):
    words = ("the model learns diagonal blocks of each weight matrix while the rest stays frozen "
             "and the adapter starts at zero so training begins exactly at the base model").split()
    with open(path, "w") as f:
        for i in range(count):
            text = " ".join(words[(i * 7 + k) % len(words)] for k in range(60))
            f.write(json.dumps({"text": text}) + "\n")


def run_diablo(args, work, data):
    config = {
        "model": args.model,
        "method": {"name": "diablo", "blocks": args.blocks, "target_modules": TARGETS},
        "data": {"train": data, "max_seq_len": args.seq, "packing": True},
        "optim": {"max_steps": args.steps, "global_batch": args.batch, "lr": 1e-4, "scheduler": "constant",
                  "max_grad_norm": 0},
        "output_dir": os.path.join(work, "diablo-run"),
        "threads": args.threads,
    }
    path = os.path.join(work, "bench.json")
    with open(path, "w") as f:
        json.dump(config, f)
    out = subprocess.run([args.diablo, "train", path, "--events"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("diablo train failed:\n" + out.stderr + out.stdout[-2000:])
    events = [json.loads(line) for line in out.stdout.splitlines()]
    steps = [e for e in events if e["event"] == "step"][1:]
    finished = [e for e in events if e["event"] == "finished"][0]
    return {
        "tokens_per_s": sum(e["tokens"] for e in steps) / sum(e["step_s"] for e in steps),
        "peak_rss_bytes": finished["peak_rss_bytes"],
        "losses": [e["loss"] for e in events if e["event"] == "step"],
    }


def baseline(args, data):
    """Runs in a child process (its own peak RSS): prints one JSON line."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    directory, name = os.path.split(args.model)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, torch_dtype=torch.float32)
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)

    adapters = []
    for path, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or path.split(".")[-1] not in TARGETS:
            continue
        out_f, in_f = module.weight.shape
        b_in, b_out = -(-in_f // args.blocks), -(-out_f // args.blocks)
        n_eff = max(-(-in_f // b_in), -(-out_f // b_out))
        a = torch.nn.Parameter(torch.zeros(n_eff, b_in, b_out))
        adapters.append(a)

        def hook(mod, inputs, output, a=a, in_f=in_f, out_f=out_f, n=n_eff, b_in=b_in):
            x = inputs[0]
            x = torch.nn.functional.pad(x, (0, n * b_in - in_f)).view(*x.shape[:-1], n, b_in)
            z = torch.einsum("...ni,nio->...no", x, a).flatten(-2)[..., :out_f]
            return output + z

        module.register_forward_hook(hook)
    optimizer = torch.optim.AdamW(adapters, lr=1e-4)

    # The same packing as diablo: whole examples (text + EOS) in order, up to SEQ tokens.
    sequences, current = [], []
    with open(data) as f:
        for line in f:
            ids = tokenizer(json.loads(line)["text"], add_special_tokens=True).input_ids + [tokenizer.eos_token_id]
            if current and len(current) + len(ids) > args.seq:
                sequences.append(current)
                current = []
            current = current + ids
    chosen = sequences[: args.batch]
    lengths = sorted({len(s) for s in chosen})
    shortest = lengths[0]
    batch = torch.tensor([s[:shortest] for s in chosen])
    times, losses = [], []
    for step in range(args.steps):
        start = time.perf_counter()
        logits = model(batch).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    tokens = batch.numel()
    print(json.dumps({
        "tokens_per_s": tokens * (args.steps - 1) / sum(times[1:]),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "losses": losses,
        "sequence_lengths": lengths,
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--diablo", default=os.path.join(REPO, "build", "bin", "diablo"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline-only", metavar="DATA", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_only:
        return baseline(args, args.baseline_only)

    with tempfile.TemporaryDirectory(prefix="diablo-train-bench-") as work:
        data = os.path.join(work, "text.jsonl")
        # Every step takes the same batch size of full SEQ-token sequences.
        write_text_dataset(data, args.batch * args.steps * 2)
        ours = run_diablo(args, work, data)
        child = subprocess.run([sys.executable, __file__, "--baseline-only", data] +
                               [f"--{k}={v}" for k, v in (("model", args.model), ("steps", args.steps),
                                                          ("batch", args.batch), ("seq", args.seq),
                                                          ("blocks", args.blocks), ("threads", args.threads))],
                               capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit("baseline failed:\n" + child.stderr[-3000:])
        base = json.loads(child.stdout.strip().splitlines()[-1])

    mib = 1 << 20
    print(f"DiaBlo training, SmolLM2-135M fp32 CPU, {args.threads} threads, batch {args.batch} x {args.seq} tokens, "
          f"N={args.blocks} on {','.join(TARGETS)}, {args.steps} steps (first excluded)")
    print(f"{'':28}{'tokens/s':>12}{'peak RSS MiB':>15}  first losses")
    for label, r in (("diablo train", ours), ("HF transformers + einsum", base)):
        first = ", ".join(f"{x:.3f}" for x in r["losses"][:3])
        print(f"{label:28}{r['tokens_per_s']:12.1f}{r['peak_rss_bytes'] / mib:15.0f}  {first}")
    print(f"throughput ratio (diablo / baseline): {ours['tokens_per_s'] / base['tokens_per_s']:.2f}x")
    print(f"peak memory ratio (diablo / baseline): {ours['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}x")


if __name__ == "__main__":
    main()
