#!/usr/bin/env bash
# DiaBlo against LoRA with (nearly) the same number of trainable parameters,
# on the same data, steps and learning-rate schedule: SmolLM2-135M-Instruct
# on the demo's dates task.  Prints trainable parameters, the final training
# loss, eval loss and exact-match accuracy of each.
#
#   bench/method_comparison.sh [STEPS] [LR_DIABLO] [LR_LORA]
#
# DiaBlo N=32 on all seven projections trains 3,317,760 parameters; LoRA
# rank 11 on the same modules trains 3,358,080 (+1.2%).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
diablo=$build/bin/diablo
model=${DIABLO_CACHE:-$HOME/.cache/diablo}/models/SmolLM2-135M-Instruct.Q4_1.gguf
steps=${1:-30}
lr_diablo=${2:-3.0e-3}
lr_lora=${3:-3.0e-3}
threads=${THREADS:-$(nproc)}
work=$(mktemp -d -t diablo-methods-XXXX)
trap 'rm -rf "$work"' EXIT

python3 "$repo/scripts/make_demo_data.py" "$work" 400
cat >"$work/job.yaml" <<YAML
model: $model
method: {target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}
data: {train: $work/train.jsonl, eval: $work/eval.jsonl, max_seq_len: 128}
optim: {max_steps: $steps, global_batch: 8, warmup_steps: 3, scheduler: cosine}
output_dir: $work/unused
threads: $threads
YAML

printf '%-8s %12s %10s %10s %10s %8s\n' method trainable train_loss eval_loss accuracy seconds
for run in "diablo method.blocks=32 $lr_diablo" "lora method.rank=11 $lr_lora"; do
  set -- $run
  name=$1 setting=$2 lr=$3
  start=$(date +%s)
  "$diablo" train "$work/job.yaml" --events --set method.name=$name --set "$setting" --set optim.lr=$lr \
    --set output_dir="$work/$name" >"$work/$name.events"
  seconds=$(($(date +%s) - start))
  accuracy=$("$diablo" eval --model "$model" --adapter "$work/$name/adapter" --data "$work/eval.jsonl" \
    --task exact --max-new-tokens 12 --threads "$threads" --json)
  python3 - "$work/$name.events" "$accuracy" "$name" "$seconds" <<'PY'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1])]
started = next(e for e in events if e["event"] == "started")
finished = next(e for e in events if e["event"] == "finished")
result = json.loads(sys.argv[2])
print(f"{sys.argv[3]:8} {started['trainable_parameters']:12,} {finished['loss']:10.4f} "
      f"{finished['eval_loss']:10.4f} {100 * result['accuracy']:9.1f}% {sys.argv[4]:>8}")
PY
done
