#!/usr/bin/env python3
"""Compares the step losses of `diablo train --events` runs for scripts/gpu-check.sh.

  compare_losses.py --reference REF.jsonl --candidate RUN.jsonl [--candidate MORE.jsonl]
                    --steps N --tol T [--first-step-tol T1] [--expect device=cuda ...]
                    [--min-learning D]

Candidates given more than once are one run in parts (stopped, then
resumed): their step events are joined and must be steps 1..N exactly once.
The reference must be steps 1..N too.  Each step's |candidate - reference|
must be at most T (T1 for step 1, when given).  --expect KEY=VALUE checks a
field of every candidate part's `started` event (a value prefix: device=cuda
matches cuda:0).  --min-learning D asks both runs to lower the loss by at
least D from step 1 to the mean of the last five steps, so two runs that
both fail to train do not agree by accident.

Prints a markdown table and a verdict line; exit 0 when everything holds,
1 when not, 2 when a file is missing or holds no events.  Plain Python: no
packages beyond the standard library.
"""
import argparse
import json
import math
import sys


def read_events(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip().startswith("{")]
    except OSError as e:
        print(f"cannot read {path}: {e.strerror}")
        sys.exit(2)


def steps_of(events, path, problems):
    losses = {}
    for e in events:
        if e.get("event") == "error":
            problems.append(f"{path}: error event: {e.get('code')}: {e.get('message')}")
        if e.get("event") != "step":
            continue
        step = e.get("step")
        if step in losses:
            problems.append(f"{path}: step {step} reported twice")
        losses[step] = e.get("loss")
    return losses


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", required=True)
    p.add_argument("--candidate", action="append", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--tol", type=float, required=True)
    p.add_argument("--first-step-tol", type=float)
    p.add_argument("--expect", action="append", default=[])
    p.add_argument("--min-learning", type=float)
    args = p.parse_args()

    problems = []
    ref = steps_of(read_events(args.reference), args.reference, problems)
    cand = {}
    for path in args.candidate:
        events = read_events(path)
        started = [e for e in events if e.get("event") == "started"]
        if not started:
            problems.append(f"{path}: no started event")
        for expectation in args.expect:
            key, _, want = expectation.partition("=")
            for e in started:
                got = str(e.get(key))
                if not got.startswith(want):
                    problems.append(f"{path}: started.{key} is {got!r}, expected {want!r}")
        for step, loss in steps_of(events, path, problems).items():
            if step in cand:
                problems.append(f"step {step} reported by two parts of the candidate run")
            cand[step] = loss
    if not ref and not cand:
        print("no step events in either run")
        sys.exit(2)

    want_steps = list(range(1, args.steps + 1))
    for name, losses in (("reference", ref), ("candidate", cand)):
        if sorted(losses) != want_steps:
            have = sorted(losses)
            problems.append(f"{name} has steps {compact(have)}, expected 1..{args.steps}")

    print("| step | reference | candidate | difference | allowed |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    worst = 0.0
    for step in want_steps:
        r, c = ref.get(step), cand.get(step)
        tol = args.first_step_tol if step == 1 and args.first_step_tol is not None else args.tol
        if r is None or c is None or not math.isfinite(r) or not math.isfinite(c):
            print(f"| {step} | {fmt(r)} | {fmt(c)} | - | {tol:g} |")
            if r is not None and c is not None:
                problems.append(f"step {step}: a loss is not finite")
            continue
        diff = abs(c - r)
        worst = max(worst, diff)
        mark = "" if diff <= tol else " **over**"
        print(f"| {step} | {r:.5f} | {c:.5f} | {diff:.5f}{mark} | {tol:g} |")
        if diff > tol:
            problems.append(f"step {step}: |{c:.5f} - {r:.5f}| = {diff:.5f} > {tol:g}")

    if args.min_learning is not None:
        for name, losses in (("reference", ref), ("candidate", cand)):
            last = [losses[s] for s in want_steps[-5:] if s in losses]
            if 1 in losses and last:
                drop = losses[1] - sum(last) / len(last)
                if not drop >= args.min_learning:
                    problems.append(f"{name}: the loss fell by {drop:.3f} from step 1 to the "
                                    f"last five steps, expected at least {args.min_learning:g}")

    print()
    if problems:
        print(f"verdict: FAIL (largest difference {worst:.5f}): " + "; ".join(problems[:6]))
        sys.exit(1)
    print(f"verdict: PASS: largest difference {worst:.5f} over {args.steps} steps")


def fmt(value):
    return "-" if value is None else f"{value:.5f}"


def compact(steps):
    if not steps:
        return "none"
    if steps == list(range(steps[0], steps[-1] + 1)):
        return f"{steps[0]}..{steps[-1]}"
    return ",".join(str(s) for s in steps)


if __name__ == "__main__":
    main()
