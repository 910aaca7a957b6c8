#!/usr/bin/env bash
# `make demo`: the largest real job this build runs on the real model —
# describe SmolLM2-135M-Instruct (Q4_1 GGUF), then answer two questions with
# it as a batch, through its own chat template.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
model=${DIABLO_CACHE:-$HOME/.cache/diablo}/models/SmolLM2-135M-Instruct.Q4_1.gguf
diablo=$build/bin/diablo

"$diablo" version
echo
"$diablo" inspect --model "$model"
echo
echo "generate (greedy, chat template, two prompts in one batch):"
"$diablo" generate --model "$model" --chat --max-new-tokens 48 \
  --prompt "What is the capital of France?" \
  --prompt "Write a haiku about the sea."
