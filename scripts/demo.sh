#!/usr/bin/env bash
# `make demo`: the largest real job this build can run on the real model.
# Today: describe SmolLM2-135M-Instruct from its GGUF header.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build}
model=${DIABLO_CACHE:-$HOME/.cache/diablo}/models/SmolLM2-135M-Instruct.Q4_1.gguf
"$build/bin/diablo" version
echo
"$build/bin/diablo" inspect --model "$model"
