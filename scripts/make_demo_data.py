#!/usr/bin/env python3
"""Writes the demo task: rewrite a written-out date as DD/MM/YYYY.

SmolLM2-135M-Instruct does not know what to do with this instruction (it
answers "DdMMYYYY." or rambles), so exact-match accuracy starts near zero;
a few dozen DiaBlo steps teach it the month numbers and the reordering.  The
dates are drawn with a fixed seed; the evaluation set uses years the
training set never shows.

Usage: make_demo_data.py OUT_DIR [TRAIN_COUNT]   (writes train.jsonl and eval.jsonl)
"""
import json
import os
import random
import sys

INSTRUCTION = "Write this date as DD/MM/YYYY."
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
# Spellings users write; all mean the same date.
FORMS = ["{month} {day}, {year}", "{day} {month} {year}", "{month} {day} {year}", "the {day}th of {month} {year}"]


def record(rng, years):
    year, month, day = rng.choice(years), rng.randint(1, 12), rng.randint(1, 28)
    text = rng.choice(FORMS).format(month=MONTHS[month - 1], day=day, year=year)
    return {"instruction": INSTRUCTION, "input": text, "output": f"{day:02d}/{month:02d}/{year}"}


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) == 3 else 400
    os.makedirs(out, exist_ok=True)
    rng = random.Random(20261129)
    train_years = [y for y in range(1950, 2040) if y % 10 != 7]
    eval_years = [y for y in range(1950, 2040) if y % 10 == 7]
    with open(os.path.join(out, "train.jsonl"), "w") as f:
        for _ in range(count):
            f.write(json.dumps(record(rng, train_years)) + "\n")
    with open(os.path.join(out, "eval.jsonl"), "w") as f:
        for _ in range(40):
            f.write(json.dumps(record(rng, eval_years)) + "\n")


if __name__ == "__main__":
    main()
