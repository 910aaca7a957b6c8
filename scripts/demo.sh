#!/usr/bin/env bash
# `make demo`: the service end to end on this machine.  Starts a
# diablo-scheduler (SQLite and file storage under $DEMO_DIR) and one CPU
# diablo-worker, submits a DiaBlo fine-tune of SmolLM2-135M-Instruct (the real
# Q4_1 GGUF) on a task it gets wrong — writing dates as DD/MM/YYYY — watches
# it with the progress bar, downloads the adapter, shows the accuracy and
# sample answers before and after, and stops everything it started.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
bin=$build/bin
model=${DIABLO_CACHE:-$HOME/.cache/diablo}/models/SmolLM2-135M-Instruct.Q4_1.gguf
work=${DEMO_DIR:-$build/demo}
threads=${DEMO_THREADS:-$(nproc)}

mkdir -p "$work"
rm -rf "$work/service" "$work/worker" "$work/adapter"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

"$bin/diablo" version
echo
python3 "$repo/scripts/make_demo_data.py" "$work" 400
echo "task: $(head -1 "$work/train.jsonl")"
echo "      400 training examples, 40 held-out examples (years never seen in training)"
echo

echo "== starting the service (logs in $work/*.log)"
"$bin/diablo-scheduler" --data-dir "$work/service" token create --tenant demo >"$work/user.token" 2>/dev/null
"$bin/diablo-scheduler" --data-dir "$work/service" token create --tenant ops --role worker \
  >"$work/worker.token" 2>/dev/null
"$bin/diablo-scheduler" --data-dir "$work/service" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  2>"$work/scheduler.log" &
pids+=($!)
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$work/scheduler.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/scheduler.log"; echo "demo: the scheduler did not start" >&2; exit 1; }
export DIABLO_SERVER=127.0.0.1:$port
DIABLO_TOKEN=$(cat "$work/worker.token") "$bin/diablo-worker" --name demo-cpu --work-dir "$work/worker" \
  2>"$work/worker.log" &
pids+=($!)
export DIABLO_TOKEN
DIABLO_TOKEN=$(cat "$work/user.token")
for _ in $(seq 100); do
  "$bin/diablo-ctl" workers 2>/dev/null | grep -q "demo-cpu.*alive" && break
  sleep 0.1
done
"$bin/diablo-ctl" version
"$bin/diablo-ctl" workers
echo

cat >"$work/job.yaml" <<YAML
# DiaBlo on every projection of every layer, 32 blocks per matrix.  Local
# files are uploaded by diablo-ctl submit.
model: $model
method:
  name: diablo
  blocks: 32
  target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
data:
  train: train.jsonl
  eval: eval.jsonl
  max_seq_len: 128
optim:
  max_steps: 30
  global_batch: 8
  lr: 3.0e-3
  warmup_steps: 3
  scheduler: cosine
save_every: 10
threads: $threads
YAML

evaluate() {  # $1: label, then extra flags for diablo eval
  local label=$1
  shift
  echo "== $label: exact-match accuracy on the held-out dates"
  "$bin/diablo" eval --model "$model" --data "$work/eval.jsonl" --task exact --max-new-tokens 12 \
    --show 3 --threads "$threads" "$@"
  echo
}

evaluate "before fine-tuning"
echo "== submitting $work/job.yaml to the scheduler"
job=$("$bin/diablo-ctl" submit "$work/job.yaml" --name dates-demo --label demo=dates)
"$bin/diablo-ctl" watch "$job"
echo
"$bin/diablo-ctl" get "$job"
echo
echo "== downloading the adapter"
"$bin/diablo-ctl" download "$job" --out "$work/adapter-download" >/dev/null
rm -rf "$work/adapter" && mv "$work/adapter-download/adapter" "$work/adapter" && rm -rf "$work/adapter-download"
echo
evaluate "after fine-tuning" --adapter "$work/adapter"
echo "adapter: $work/adapter ($(du -sh "$work/adapter" | cut -f1)); serve it with"
echo "  $bin/diablo generate --model $model --adapter $work/adapter --chat --prompt \$'Write this date as DD/MM/YYYY.\\n\\nMay 3, 2001'"
echo "the service stops now (it was started for this demo)."
