#!/usr/bin/env bash
# `make demo`: fine-tune SmolLM2-135M-Instruct (the real Q4_1 GGUF) with
# DiaBlo on a task it gets wrong — writing dates as DD/MM/YYYY — and show
# the accuracy and sample answers before and after.  Everything it writes
# goes under $DEMO_DIR (default build/demo).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
model=${DIABLO_CACHE:-$HOME/.cache/diablo}/models/SmolLM2-135M-Instruct.Q4_1.gguf
diablo=$build/bin/diablo
work=${DEMO_DIR:-$build/demo}
threads=${DEMO_THREADS:-$(nproc)}

"$diablo" version
echo
python3 "$repo/scripts/make_demo_data.py" "$work" 400
echo "task: $(head -1 "$work/train.jsonl")"
echo "      400 training examples, 40 held-out examples (years never seen in training)"
echo

cat >"$work/job.yaml" <<YAML
# DiaBlo on every projection of every layer, 32 blocks per matrix.
model: $model
method:
  name: diablo
  blocks: 32
  target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
data:
  train: $work/train.jsonl
  eval: $work/eval.jsonl
  max_seq_len: 128
optim:
  max_steps: 30
  global_batch: 8
  lr: 3.0e-3
  warmup_steps: 3
  scheduler: cosine
output_dir: $work/run
threads: $threads
YAML

evaluate() {  # $1: label, then extra flags for diablo eval
  local label=$1
  shift
  echo "== $label: exact-match accuracy on the held-out dates"
  "$diablo" eval --model "$model" --data "$work/eval.jsonl" --task exact --max-new-tokens 12 \
    --show 3 --threads "$threads" "$@"
  echo
}

evaluate "before fine-tuning"
echo "== fine-tuning (config: $work/job.yaml)"
rm -rf "$work/run"
"$diablo" train "$work/job.yaml"
echo
evaluate "after fine-tuning" --adapter "$work/run/adapter"
echo "adapter: $work/run/adapter ($(du -sh "$work/run/adapter" | cut -f1)); serve it with"
echo "  $diablo generate --model $model --adapter $work/run/adapter --chat --prompt \$'Write this date as DD/MM/YYYY.\\n\\nMay 3, 2001'"
