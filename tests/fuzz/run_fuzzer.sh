#!/usr/bin/env bash
# Runs one libFuzzer binary for a bounded time on its seed corpus; ctest's
# `fuzz` tests call this.  A crash, a sanitizer report or an exception other
# than FormatError makes libFuzzer exit non-zero and leaves the input as
# <work>/crash-* (rerun the fuzzer with that file as its only argument).
# Usage: run_fuzzer.sh <fuzzer> <seed folder> <work folder> <seconds>
set -euo pipefail
fuzzer=$1 seeds=$2 work=$3 seconds=$4
[ -x "$fuzzer" ] || { echo "fuzzer $fuzzer was not built" >&2; exit 1; }
[ -d "$seeds" ] || { echo "seed corpus $seeds was not generated" >&2; exit 1; }
mkdir -p "$work/corpus"
# New interesting inputs go to the work corpus, which later runs start from.
exec "$fuzzer" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
  -artifact_prefix="$work/" -print_final_stats=1 "$work/corpus" "$seeds"
