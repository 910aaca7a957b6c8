#!/usr/bin/env python3
"""Training throughput and peak memory: `diablo train` against a Python baseline.

Both fine-tune the same model (SmolLM2-135M-Instruct from its Q4_1 GGUF,
dequantised to fp32) with DiaBlo on the same targets and blocks, the same
data (the demo's instruction task rendered with the model's chat template,
loss on the answers only: prompt labels masked), the same batch size, AdamW, fp32 on CPU, the same
number of threads.  The baseline is Hugging Face transformers with the
block-diagonal update written as an einsum, as the DiaBlo paper describes:

    z = einsum("...ni,nio->...no", pad(x).view(..., N, b_in), A).flatten(-2)[..., :out]

added to each frozen target Linear's output through a forward hook.

The baseline computes the LM head on every position and masks the prompt
with label -100, as a transformers training script does; `diablo train`
computes it only where labels exist.  Both draw random batches of the same
size from the same examples.  Throughput counts the real (unpadded) input
tokens of every step after the first (warm-up),
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


def write_dataset(work):
    """The demo's instruction task: short answers after a longer prompt."""
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_demo_data.py"), work, "400"], check=True)
    return os.path.join(work, "train.jsonl")


def run_diablo(args, work, data):
    config = {
        "model": args.model,
        "method": {"name": "diablo", "blocks": args.blocks, "target_modules": TARGETS},
        "data": {"train": data, "max_seq_len": args.seq},
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

    # Each record rendered with the model's chat template; labels -100 on the
    # prompt (and padding), as a transformers training script writes them.
    examples = []
    with open(data) as f:
        for line in f:
            r = json.loads(line)
            user = {"role": "user", "content": r["instruction"] + "\n\n" + r["input"]}
            prompt = tokenizer.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template([user, {"role": "assistant", "content": r["output"]}],
                                                 tokenize=False)
            ids = tokenizer(full, add_special_tokens=False).input_ids
            p = len(tokenizer(prompt, add_special_tokens=False).input_ids)
            labels = [-100] * p + ids[p:-1] + [-100]  # the reply and <|im_end|>, not the newline after it
            examples.append((ids, labels))
    generator = torch.Generator().manual_seed(0)
    times, losses, tokens = [], [], []
    for step in range(args.steps):
        chosen = [examples[i] for i in torch.randperm(len(examples), generator=generator)[: args.batch]]
        longest = max(len(ids) for ids, _ in chosen)
        pad = tokenizer.eos_token_id
        batch = torch.tensor([ids + [pad] * (longest - len(ids)) for ids, _ in chosen])
        labels = torch.tensor([lab + [-100] * (longest - len(lab)) for _, lab in chosen])
        start = time.perf_counter()
        logits = model(batch).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
        tokens.append(sum(len(ids) for ids, _ in chosen))
    print(json.dumps({
        "tokens_per_s": sum(tokens[1:]) / sum(times[1:]),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "losses": losses,
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--diablo", default=os.path.join(REPO, "build", "bin", "diablo"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline-only", metavar="DATA", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_only:
        return baseline(args, args.baseline_only)

    with tempfile.TemporaryDirectory(prefix="diablo-train-bench-") as work:
        data = write_dataset(work)
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
    print(f"DiaBlo training, SmolLM2-135M fp32 CPU, {args.threads} threads, batch {args.batch}, dates task, "
          f"N={args.blocks} on {','.join(TARGETS)}, {args.steps} steps (first excluded)")
    print(f"{'':28}{'tokens/s':>12}{'peak RSS MiB':>15}  first losses")
    for label, r in (("diablo train", ours), ("HF transformers + einsum", base)):
        first = ", ".join(f"{x:.3f}" for x in r["losses"][:3])
        print(f"{label:28}{r['tokens_per_s']:12.1f}{r['peak_rss_bytes'] / mib:15.0f}  {first}")
    print(f"throughput ratio (diablo / baseline): {ours['tokens_per_s'] / base['tokens_per_s']:.2f}x")
    print(f"peak memory ratio (diablo / baseline): {ours['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}x")


if __name__ == "__main__":
    main()
