#!/usr/bin/env bash
# The compute plane's checks on a GPU machine, as one command (docs/gpu-check.md).
#
# Here, on a machine with the Debian packages and the test venv:
#   scripts/gpu-check.sh --prepare .gpu-check
# writes what a bare GPU machine lacks into .gpu-check (under 50 MiB): the
# header-only libraries, GoogleTest's sources, small test models and data.
# There, with PyTorch (LibTorch inside), nvcc, CMake and ninja:
#   scripts/gpu-check.sh --prepared .gpu-check --out "$OUT"
# builds the compute plane for the GPU it finds and runs every check, each
# under its own time limit, into OUT/gpu-check-report.md.
#
# Exit status: 0 every check ran and passed; 1 a check failed; 2 bad usage or
# a missing tool; 3 nothing failed, but checks were skipped (no GPU).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
self="$repo/scripts/gpu-check.sh"
helpers="$repo/scripts/gpu_check"
tmp=${TMPDIR:-/tmp}

usage() {
  cat <<EOF
usage: scripts/gpu-check.sh --prepare DIR [--python PY]
       scripts/gpu-check.sh [--prepared DIR] [--out DIR] [options]

  --prepare DIR        write the prepared folder (needs the Debian packages of
                       scripts/debian-packages.txt and the test venv); then stop
  --prepared DIR       the folder --prepare wrote (default: .gpu-check in the repo)
  --out DIR            where the report and the logs go (default: $tmp/gpu-check-out)
  --build DIR          the build directory (default: build-gpu-check in the repo, which
                       git ignores, so a second run on the same machine is incremental)
  --work DIR           scratch space for training runs (default: $tmp/gpu-check-work)
  --jobs N             parallel compile jobs (default: all cores, $(nproc))
  --python PY          a Python with torch (default: python3 if it has torch, else
                       the setup script's venv)
  --cuda-arch LIST     CMAKE_CUDA_ARCHITECTURES (default: the GPU's own, e.g. 90-real;
                       without a GPU the project's default list)
  --only LIST          run only these checks (comma-separated; see below); the build
                       always runs unless --no-build
  --no-build           reuse the build directory as it is
  --build-timeout S    time limit of the configure + build step (default 420)
  --rehearse-on-cpu    without a GPU, run the training checks' GPU runs on the CPU
                       (bf16 still) to exercise the comparisons; NCCL stays skipped
  --hide-system-deps   rehearsal of a bare machine: hide the Debian packages' headers
                       and CMake files (a private mount namespace; needs root)

checks: build ctest-gpu train-cpu-fp32 train-cuda-bf16 resume-cuda ddp-gloo-2ranks
        nccl-1rank packed-q4_1-cuda adapter-bench-cuda llama-throughput
EOF
}

die() {
  echo "gpu-check: $*" >&2
  exit 2
}

# ---- the checks' parameters (docs/gpu-check.md explains the tolerances) -------
readonly STEPS=20 STOP_AT=10
# |loss difference| allowed per step between a bf16 CUDA run and the fp32 CPU run.
readonly TOL_PRECISION=0.03
# The same with dropout on both sides: their masks come from different
# generators, so after step 1 (where the zero-initialised adapter makes
# dropout irrelevant) the runs may differ by what dropout itself changes.
readonly TOL_DROPOUT=0.08
# Resuming, and one NCCL rank against no process group: the same arithmetic.
readonly TOL_SAME=0.005
# Both runs of a comparison must have trained: loss down by this much.
readonly MIN_LEARNING=0.5
declare -A LIMIT=([ctest-gpu]=150 [train-cpu-fp32]=150 [train-cuda-bf16]=150 [resume-cuda]=150
  [ddp-gloo-2ranks]=150 [nccl-1rank]=120 [packed-q4_1-cuda]=150 [adapter-bench-cuda]=120
  [llama-throughput]=300)
readonly CHECKS=(ctest-gpu train-cpu-fp32 train-cuda-bf16 resume-cuda ddp-gloo-2ranks nccl-1rank
  packed-q4_1-cuda adapter-bench-cuda llama-throughput)

# ==== --prepare ===============================================================

# Copies the files of Debian package $1 under the given /usr/... prefixes into
# $prefix, keeping their paths below /usr (CMake package files find their
# headers relative to themselves).
copy_package() {
  local pkg=$1 prefix=$2
  shift 2
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
    die "--prepare: the Debian package $pkg is not installed (scripts/setup.sh installs it)"
  local file under copied=0
  while IFS= read -r file; do
    [ -f "$file" ] || continue
    for under in "$@"; do
      case $file in
        "$under"/*)
          mkdir -p "$prefix/$(dirname "${file#/usr/}")"
          cp -p "$file" "$prefix/${file#/usr/}"
          copied=$((copied + 1))
          ;;
      esac
    done
  done < <(dpkg -L "$pkg")
  [ "$copied" -gt 0 ] || die "--prepare: package $pkg has no files under $*"
  mkdir -p "$prefix/../licenses"
  [ -f "/usr/share/doc/$pkg/copyright" ] && cp "/usr/share/doc/$pkg/copyright" "$prefix/../licenses/$pkg"
  echo "$pkg $(dpkg-query -W -f='${Version}' "$pkg"): $copied files" >>"$prefix/../prepared-deps.txt"
}

prepare() {
  local dir=$1
  command -v dpkg >/dev/null || die "--prepare needs a Debian machine with the packages of scripts/debian-packages.txt"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  rm -rf "$dir/deps" "$dir/models" "$dir/data"
  local deps=$dir/deps
  mkdir -p "$deps/prefix"
  echo "# written by scripts/gpu-check.sh --prepare; read by cmake/DiabloPreparedDeps.cmake" >"$deps/prepared-deps.txt"
  # Header-only: JSON, the command line, and gloo's headers (the library itself
  # is inside LibTorch; the torch wheel ships no gloo headers).
  copy_package nlohmann-json3-dev "$deps/prefix" /usr/include /usr/share/cmake
  copy_package libcli11-dev "$deps/prefix" /usr/include /usr/share/cmake
  copy_package libgloo-dev "$deps/prefix" /usr/include
  # GoogleTest and GoogleMock as sources (tests/CMakeLists.txt builds them).
  local gt=/usr/src/googletest
  [ -f "$gt/CMakeLists.txt" ] || die "--prepare: no GoogleTest sources in $gt (Debian package googletest)"
  mkdir -p "$deps/googletest"
  cp -p "$gt/CMakeLists.txt" "$deps/googletest/"
  local part
  for part in googletest googlemock; do
    mkdir -p "$deps/googletest/$part"
    cp -pr "$gt/$part/CMakeLists.txt" "$gt/$part/cmake" "$gt/$part/include" "$gt/$part/src" \
      "$deps/googletest/$part/"
  done
  cp /usr/share/doc/googletest/copyright "$deps/licenses/googletest" 2>/dev/null || true
  echo "googletest $(dpkg-query -W -f='${Version}' googletest): sources" >>"$deps/prepared-deps.txt"
  # Not copied: yaml-cpp (a compiled library: the checks write JSON configs),
  # Google Benchmark (only adapter_bench, which the checks do not need) and
  # SentencePiece (the test models use byte-level BPE).

  "$python" "$helpers/make_models.py" "$dir/models"
  "$python" "$repo/scripts/make_demo_data.py" "$dir/data" 400
  local kib
  kib=$(du -sk "$dir" | cut -f1)
  echo "gpu-check: prepared $dir: $((kib / 1024)) MiB ($kib KiB)"
  du -sh "$dir"/* | sed 's/^/  /'
  [ "$kib" -le $((50 * 1024)) ] || die "--prepare: $dir is over 50 MiB"
  echo "gpu-check: on the GPU machine run: scripts/gpu-check.sh --prepared ${dir#"$repo"/} --out \"\$OUT\""
}

# ==== the report ==============================================================

# One file per check under $GC_WORK/checks/NAME: result (PASS/FAIL/SKIP),
# figures (one line), seconds, detail.md.  The report is rebuilt from them
# after every check, so a run cut short still leaves one.
write_report() {
  local report=$GC_OUT/gpu-check-report.md name dir outcome
  {
    echo "# gpu-check report"
    echo
    cat "$GC_WORK/header.md"
    echo
    echo "| check | result | seconds | figures |"
    echo "| --- | --- | ---: | --- |"
    for name in build "${CHECKS[@]}"; do
      dir=$GC_WORK/checks/$name
      [ -f "$dir/result" ] || continue
      outcome=$(cat "$dir/result")
      echo "| $name | **$outcome** | $(cat "$dir/seconds" 2>/dev/null || echo -) | $(tr '\n|' ' /' <"$dir/figures" 2>/dev/null) |"
    done
    echo
    for name in build "${CHECKS[@]}"; do
      dir=$GC_WORK/checks/$name
      [ -f "$dir/result" ] || continue
      echo "## $name: $(cat "$dir/result")"
      echo
      [ -f "$dir/detail.md" ] && cat "$dir/detail.md"
      echo
    done
  } >"$report.tmp"
  mv "$report.tmp" "$report"
}

# ---- helpers for the checks (they run in a child: scripts/gpu-check.sh --run-check NAME)
result() { # RESULT FIGURES
  echo "$1" >"$check_dir/result"
  echo "$2" >"$check_dir/figures"
}
detail() { printf '%s\n' "$@" >>"$check_dir/detail.md"; }
detail_log() { # FILE [LINES]: the end of a log as a text block
  local lines=${2:-25}
  [ -s "$1" ] || return 0
  detail "\`$(basename "$1")\`, last $lines lines:" '```text'
  tail -n "$lines" "$1" | cut -c1-300 >>"$check_dir/detail.md"
  detail '```'
}
need_gpu() { # true when the check may run on a GPU (or on the CPU in a rehearsal)
  [ "$GC_GPU" = 1 ] || [ "$GC_REHEARSE" = 1 ]
}
skip_no_gpu() {
  result SKIP "no GPU: $GC_GPU_NOTE"
  detail "Skipped: no CUDA device ($GC_GPU_NOTE)."
}
# The device the GPU runs use: cuda, or cpu in a rehearsal without a GPU.
gpu_device() { if [ "$GC_GPU" = 1 ]; then echo cuda; else echo cpu; fi; }
on_cpu_note() { [ "$GC_GPU" = 1 ] || echo " (REHEARSAL ON CPU: no GPU here)"; }

free_port() {
  "$GC_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# train_run NAME OUTPUT_DIR [diablo train options...]: one `diablo train` of
# the prepared job, its events in runs/NAME/events.jsonl and its stderr in
# runs/NAME/stderr.log.  A run another check already made is reused.
train_run() {
  local name=$1 output=$2
  shift 2
  local dir=$GC_WORK/runs/$name
  if [ -f "$dir/status" ]; then return "$(cat "$dir/status")"; fi
  rm -rf "$dir"
  mkdir -p "$dir"
  local rc=0 start=$SECONDS
  echo "diablo train $GC_WORK/job.json --events --set output_dir=$output $*" >"$dir/command"
  "$GC_BUILD/bin/diablo" train "$GC_WORK/job.json" --events --set "output_dir=$output" "$@" \
    >"$dir/events.jsonl" 2>"$dir/stderr.log" || rc=$?
  echo $((SECONDS - start)) >"$dir/seconds"
  echo "$rc" >"$dir/status"
  return "$rc"
}
run_events() { echo "$GC_WORK/runs/$1/events.jsonl"; }

# Makes the named run, reporting a failure into the detail; returns its status.
make_run() { # LABEL NAME OUTPUT [options...]
  local label=$1 name=$2 rc=0
  shift
  train_run "$@" || rc=$?
  local dir=$GC_WORK/runs/$name
  detail "- $label: \`$(cat "$dir/command")\` → exit $rc in $(cat "$dir/seconds") s"
  if [ "$rc" != 0 ]; then
    detail_log "$dir/stderr.log" 15
    grep '"event":"error"' "$dir/events.jsonl" | head -3 | sed 's/^/    /' >>"$check_dir/detail.md" || true
  fi
  return "$rc"
}

# compare LABEL REF CAND [compare_losses.py options...]: appends the table;
# true when the comparison passed; its verdict line lands in $verdict.
compare() {
  local label=$1 ref=$2 cand=$3 rc=0
  shift 3
  "$GC_PYTHON" "$helpers/compare_losses.py" --reference "$(run_events "$ref")" \
    --candidate "$(run_events "$cand")" "$@" >"$check_dir/compare.out" 2>&1 || rc=$?
  verdict=$(grep '^verdict:' "$check_dir/compare.out" || tail -1 "$check_dir/compare.out")
  detail "" "**$label**" ""
  cat "$check_dir/compare.out" >>"$check_dir/detail.md"
  return "$rc"
}

bf16_gpu_args() { echo "--set" "device=$(gpu_device)" "--set" "precision=bf16"; }

# ---- the checks ----------------------------------------------------------------

check_build() {
  local log=$GC_WORK/logs/build.log start=$SECONDS rc=0
  local -a args=(-S "$repo" -B "$GC_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release
    -DDIABLO_ENGINE_ONLY=ON -DDIABLO_BUILD_TESTS=ON -DDIABLO_BUILD_BENCH=ON
    "-DDIABLO_PREPARED_DEPS=$GC_PREPARED/deps" "-DCMAKE_PREFIX_PATH=$GC_TORCH_PREFIX"
    "-DCMAKE_CUDA_COMPILER=$GC_NVCC")
  [ -n "$GC_CUDA_ARCH" ] && args+=("-DCMAKE_CUDA_ARCHITECTURES=$GC_CUDA_ARCH")
  [ -n "$GC_NCCL_INCLUDE" ] && args+=("-DDIABLO_NCCL_INCLUDE_DIR=$GC_NCCL_INCLUDE")
  echo "cmake ${args[*]}" >"$log"
  cmake "${args[@]}" >>"$log" 2>&1 || rc=$?
  local configure_s=$((SECONDS - start))
  if [ "$rc" != 0 ]; then
    result FAIL "configure failed (exit $rc) after ${configure_s}s"
    detail_log "$log" 40
    return
  fi
  # Only what the checks run: the trainer, the gpu-labelled test binaries
  # (named in tests/**/CMakeLists.txt) and the two CUDA benchmarks.
  local -a targets=(diablo adapter_bench_cuda llama_throughput)
  mapfile -t -O 3 targets < <(grep -rhoE 'diablo_add_gtest\([A-Za-z0-9_]+ LABEL gpu' "$repo/tests" |
    sed -E 's/diablo_add_gtest\(([A-Za-z0-9_]+) .*/\1/' | sort -u)
  echo "cmake --build $GC_BUILD -j $GC_JOBS --target ${targets[*]}" >>"$log"
  local build_start=$SECONDS
  cmake --build "$GC_BUILD" -j "$GC_JOBS" --target "${targets[@]}" >>"$log" 2>&1 || rc=$?
  local build_s=$((SECONDS - build_start))
  local features
  features=$(grep -E '^-- DiaBlo (CUDA kernels|Gloo data parallelism|YAML training configs|SentencePiece tokenizers):' "$log" |
    sed -E 's/^-- DiaBlo //' | paste -sd ';' | sed 's/;/; /g')
  detail "Configure ${configure_s} s, build ${build_s} s with $GC_JOBS jobs; targets: ${targets[*]}." ""
  detail "CMake: $features" ""
  detail "CUDA architectures: ${GC_CUDA_ARCH:-the project default}; NCCL headers: ${GC_NCCL_INCLUDE:-as CMake finds them}." ""
  if [ "$rc" != 0 ]; then
    result FAIL "build failed (exit $rc) after ${build_s}s"
    grep -E 'error|Error' "$log" | head -20 >"$GC_WORK/logs/build-errors.txt" || true
    detail_log "$GC_WORK/logs/build-errors.txt" 20
    detail_log "$log" 30
    return
  fi
  result PASS "configure ${configure_s}s, build ${build_s}s (-j $GC_JOBS), CUDA arch ${GC_CUDA_ARCH:-default}"
  detail_log "$log" 5
}

check_ctest-gpu() {
  local log=$GC_WORK/logs/ctest-gpu.log rc=0
  # Each test is a process of its own that initialises CUDA: run several at once.
  local parallel=$((GC_JOBS < 8 ? GC_JOBS : 8))
  (cd "$GC_BUILD" && ctest -L gpu -j "$parallel" --output-on-failure --timeout 120) >"$log" 2>&1 || rc=$?
  local total skipped failed
  total=$(grep -oE 'tests? failed out of [0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
  failed=$(grep -oE '[0-9]+ tests? failed out of' "$log" | grep -oE '^[0-9]+' || echo 0)
  # Listed once each under "The following tests did not run:".
  skipped=$(grep -cE '^[[:space:]]*[0-9]+ - .*\((Skipped|Not Run)\)' "$log" || true)
  detail "ctest -L gpu: exit $rc, $total tests, $failed failed, $skipped skipped."
  if [ "$rc" != 0 ] || [ "$failed" != 0 ]; then
    detail_log "$log" 60
  else
    grep -m1 -E 'SKIPPED|Skipped' "$log" >"$check_dir/first-skip.txt" || true
    grep -E 'tests passed|Total Test time' "$log" >>"$check_dir/first-skip.txt" || true
    detail_log "$check_dir/first-skip.txt" 5
  fi
  if [ "$total" = 0 ]; then
    result FAIL "no test carries the gpu label in this build (were the test binaries built?)"
  elif [ "$rc" != 0 ] || [ "$failed" != 0 ]; then
    result FAIL "$failed of $total failed"
  elif [ "$skipped" = "$total" ] && [ "$GC_GPU" = 0 ]; then
    result SKIP "no GPU: all $total gpu tests skipped themselves"
  elif [ "$skipped" != 0 ]; then
    result FAIL "$skipped of $total skipped on a machine with a GPU"
  else
    result PASS "$total of $total passed"
  fi
}

check_train-cpu-fp32() {
  local ok=1
  detail "The fp32 CPU reference runs ($STEPS steps, the tiny Llama, DiaBlo N=8 on q,k,v,up,down)."
  make_run "dropout 0.1" cpu-fp32-drop "$GC_WORK/out/cpu-fp32-drop" || ok=0
  make_run "no dropout" cpu-fp32-nodrop "$GC_WORK/out/cpu-fp32-nodrop" --set method.dropout=0 || ok=0
  if [ "$ok" = 1 ] && compare "dropout 0.1 against no dropout (the size of dropout's effect, for the tolerance)" \
    cpu-fp32-nodrop cpu-fp32-drop --steps "$STEPS" --tol 1 --expect device=cpu --expect precision=fp32 \
    --min-learning "$MIN_LEARNING"; then
    result PASS "$(loss_range cpu-fp32-drop); dropout vs none: ${verdict#verdict: PASS: }"
  else
    result FAIL "${verdict:-a run failed}"
  fi
}

loss_range() { # NAME: "loss A -> B in N s"
  "$GC_PYTHON" - "$(run_events "$1")" "$(cat "$GC_WORK/runs/$1/seconds")" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"event":"step"' in l]
print(f"loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f} over {len(steps)} steps in {sys.argv[2]} s"
      if steps else "no steps")
PY
}

check_train-cuda-bf16() {
  need_gpu || {
    skip_no_gpu
    return
  }
  local ok=1 device
  device=$(gpu_device)
  detail "bf16 frozen weights on $device$(on_cpu_note) against the fp32 CPU runs."
  make_run "CPU fp32, dropout 0.1" cpu-fp32-drop "$GC_WORK/out/cpu-fp32-drop" || ok=0
  make_run "CPU fp32, no dropout" cpu-fp32-nodrop "$GC_WORK/out/cpu-fp32-nodrop" --set method.dropout=0 || ok=0
  # shellcheck disable=SC2046
  make_run "$device bf16, dropout 0.1" gpu-bf16-drop "$GC_WORK/out/gpu-bf16-drop" $(bf16_gpu_args) || ok=0
  # shellcheck disable=SC2046
  make_run "$device bf16, no dropout" gpu-bf16-nodrop "$GC_WORK/out/gpu-bf16-nodrop" $(bf16_gpu_args) \
    --set method.dropout=0 || ok=0
  local v1="" v2=""
  if compare "bf16 $device vs fp32 CPU, dropout 0.1 (masks differ: tolerance $TOL_DROPOUT, step 1 $TOL_PRECISION)" \
    cpu-fp32-drop gpu-bf16-drop --steps "$STEPS" --tol "$TOL_DROPOUT" --first-step-tol "$TOL_PRECISION" \
    --expect "device=$device" --expect precision=bf16 --min-learning "$MIN_LEARNING"; then
    v1=${verdict#verdict: PASS: }
  else
    ok=0
    v1=$verdict
  fi
  if compare "bf16 $device vs fp32 CPU, no dropout (tolerance $TOL_PRECISION)" \
    cpu-fp32-nodrop gpu-bf16-nodrop --steps "$STEPS" --tol "$TOL_PRECISION" \
    --expect "device=$device" --expect precision=bf16 --min-learning "$MIN_LEARNING"; then
    v2=${verdict#verdict: PASS: }
  else
    ok=0
    v2=$verdict
  fi
  if [ "$ok" = 1 ]; then
    result PASS "dropout: $v1; no dropout: $v2; $(loss_range gpu-bf16-drop)$(on_cpu_note)"
  else
    result FAIL "dropout: $v1; no dropout: $v2$(on_cpu_note)"
  fi
}

check_resume-cuda() {
  need_gpu || {
    skip_no_gpu
    return
  }
  local ok=1 device out=$GC_WORK/out/gpu-bf16-resume
  device=$(gpu_device)
  detail "Stop after step $STOP_AT (\`--stop-after $STOP_AT\`), then \`--resume\`, bf16 on $device$(on_cpu_note), dropout 0.1."
  # shellcheck disable=SC2046
  make_run "uninterrupted" gpu-bf16-drop "$GC_WORK/out/gpu-bf16-drop" $(bf16_gpu_args) || ok=0
  # shellcheck disable=SC2046
  make_run "first part" resume-part1 "$out" $(bf16_gpu_args) --stop-after "$STOP_AT" || ok=0
  # shellcheck disable=SC2046
  make_run "resumed" resume-part2 "$out" $(bf16_gpu_args) --resume || ok=0
  local part1 part2
  part1=$(run_events resume-part1)
  part2=$(run_events resume-part2)
  grep -q '"event":"stopped"' "$part1" || {
    ok=0
    detail "- the first part wrote no \`stopped\` event"
  }
  local started
  started=$(grep '"event":"started"' "$part2" | head -1 || true)
  if [[ $started != *"\"start_step\":$STOP_AT,"* ]]; then
    ok=0
    detail "- the resumed part did not start at step $STOP_AT: ${started:-no started event}"
  fi
  if compare "stopped at $STOP_AT and resumed vs uninterrupted (tolerance $TOL_SAME)" gpu-bf16-drop resume-part1 \
    --candidate "$part2" --steps "$STEPS" --tol "$TOL_SAME" --expect "device=$device" && [ "$ok" = 1 ]; then
    result PASS "steps 1..$STOP_AT + $((STOP_AT + 1))..$STEPS: ${verdict#verdict: PASS: }$(on_cpu_note)"
  else
    result FAIL "${verdict:-}$(on_cpu_note)"
  fi
}

# NCCL_DEBUG=INFO lines of a run: NCCL writes them to stdout (the events,
# whose reader skips them) unless NCCL_DEBUG_FILE says otherwise.
nccl_lines() {
  cat "$GC_WORK/runs/$1/events.jsonl" "$GC_WORK/runs/$1/stderr.log" 2>/dev/null | grep -c 'NCCL INFO' || true
}

check_ddp-gloo-2ranks() {
  need_gpu || {
    skip_no_gpu
    return
  }
  local ok=1 device
  device=$(gpu_device)
  detail "Two ranks (\`--nproc 2\`) on the one $device$(on_cpu_note), no dropout (each rank draws its own masks), against one rank; NCCL_DEBUG=INFO shows whether NCCL was used (it must not be: NCCL refuses two ranks on one GPU, so they must meet through Gloo)."
  # shellcheck disable=SC2046
  make_run "one rank" gpu-bf16-nodrop "$GC_WORK/out/gpu-bf16-nodrop" $(bf16_gpu_args) --set method.dropout=0 || ok=0
  # shellcheck disable=SC2046
  NCCL_DEBUG=INFO make_run "two ranks" gpu-bf16-2ranks "$GC_WORK/out/gpu-bf16-2ranks" $(bf16_gpu_args) \
    --set method.dropout=0 --nproc 2 || ok=0
  local backend=gloo
  if [ "$(nccl_lines gpu-bf16-2ranks)" != 0 ]; then
    backend=NCCL
    ok=0
    detail "- NCCL log lines appeared: the two ranks used NCCL, not Gloo"
    detail_log "$GC_WORK/runs/gpu-bf16-2ranks/stderr.log" 10
  fi
  if compare "two ranks vs one (tolerance $TOL_PRECISION)" gpu-bf16-nodrop gpu-bf16-2ranks --steps "$STEPS" \
    --tol "$TOL_PRECISION" --expect "device=$device" --expect world_size=2 && [ "$ok" = 1 ]; then
    result PASS "backend $backend; ${verdict#verdict: PASS: }$(on_cpu_note)"
  else
    result FAIL "backend $backend; ${verdict:-}$(on_cpu_note)"
  fi
}

check_nccl-1rank() {
  if [ "$GC_GPU" != 1 ]; then
    skip_no_gpu
    return
  fi
  local ok=1 port
  port=$(free_port)
  detail "One rank launched torchrun-style (RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR/PORT) with collective_backend: nccl (a single rank joins a group only when one is named) and NCCL_DEBUG=INFO: it must train as the plain run does and NCCL must have been initialised."
  # shellcheck disable=SC2046
  make_run "plain" gpu-bf16-nodrop "$GC_WORK/out/gpu-bf16-nodrop" $(bf16_gpu_args) --set method.dropout=0 || ok=0
  # shellcheck disable=SC2046
  RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port NCCL_DEBUG=INFO \
    make_run "one NCCL rank" gpu-bf16-nccl1 "$GC_WORK/out/gpu-bf16-nccl1" $(bf16_gpu_args) \
    --set method.dropout=0 --set collective_backend=nccl || ok=0
  local nccl_lines
  nccl_lines=$(nccl_lines gpu-bf16-nccl1)
  detail "- NCCL log lines: $nccl_lines"
  if [ "$nccl_lines" = 0 ]; then
    ok=0
    detail "- no NCCL communicator was created although collective_backend: nccl was set"
  fi
  if compare "one NCCL rank vs the plain run (tolerance $TOL_SAME)" gpu-bf16-nodrop gpu-bf16-nccl1 \
    --steps "$STEPS" --tol "$TOL_SAME" --expect device=cuda && [ "$ok" = 1 ]; then
    result PASS "NCCL initialised ($nccl_lines log lines); ${verdict#verdict: PASS: }"
  else
    result FAIL "NCCL log lines: $nccl_lines; ${verdict:-}"
  fi
}

check_packed-q4_1-cuda() {
  need_gpu || {
    skip_no_gpu
    return
  }
  local ok=1 device gguf=$GC_PREPARED/models/tiny-llama-q4_1.gguf
  device=$(gpu_device)
  detail "\`base_weights: packed\` on the tiny Q4_1 GGUF, bf16 on $device$(on_cpu_note) vs fp32 on the CPU, no dropout."
  make_run "CPU fp32 packed" cpu-fp32-packed "$GC_WORK/out/cpu-fp32-packed" --set "model=$gguf" \
    --set base_weights=packed --set method.dropout=0 || ok=0
  # shellcheck disable=SC2046
  make_run "$device bf16 packed" gpu-bf16-packed "$GC_WORK/out/gpu-bf16-packed" --set "model=$gguf" \
    --set base_weights=packed --set method.dropout=0 $(bf16_gpu_args) || ok=0
  if compare "packed Q4_1: bf16 $device vs fp32 CPU (tolerance $TOL_PRECISION)" cpu-fp32-packed gpu-bf16-packed \
    --steps "$STEPS" --tol "$TOL_PRECISION" --expect "device=$device" --expect base_weights=packed \
    --min-learning "$MIN_LEARNING" && [ "$ok" = 1 ]; then
    result PASS "${verdict#verdict: PASS: }$(on_cpu_note)"
  else
    result FAIL "${verdict:-}$(on_cpu_note)"
  fi
}

check_adapter-bench-cuda() {
  local log=$GC_WORK/logs/adapter_bench_cuda.log rc=0
  "$GC_BUILD/bin/adapter_bench_cuda" >"$log" 2>&1 || rc=$?
  detail "\`adapter_bench_cuda\`: exit $rc" '```text'
  cut -c1-200 "$log" | tail -n 60 >>"$check_dir/detail.md"
  detail '```'
  if [ "$rc" = 0 ] && grep -q 'no CUDA device' "$log"; then
    result SKIP "no GPU: $(head -1 "$log")"
  elif [ "$rc" = 0 ]; then
    result PASS "$(grep -m2 'DiaBlo auto / LoRA' "$log" | sed -E 's/^ +//' | paste -sd ';' | sed 's/;/; /g')"
  else
    result FAIL "exit $rc: $(tail -1 "$log")"
  fi
}

# "llama-3.2-1b: DiaBlo N=64 41234 tok/s (MFU 38.0%), LoRA r=21 ..." from the table.
throughput_figures() {
  awk '($2 == "DiaBlo" || $2 == "LoRA") && $4 ~ /^[0-9]+$/ {
         line[$1] = line[$1] (line[$1] == "" ? "" : ", ") $2 " " $3 " " $7 " tok/s (MFU " $8 ")"
         if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 }
       }
       END { for (i = 0; i < n; i++) printf "%s%s: %s", (i ? "; " : ""), order[i], line[order[i]] }' "$1"
}

check_llama-throughput() {
  local log=$GC_WORK/logs/llama_throughput.log rc=0 shapes=$GC_PREPARED/models/shapes
  local -a args=(--seq 2048 --blocks 64 --targets "q_proj,k_proj,v_proj,up_proj,down_proj")
  local shape
  for shape in llama-3.2-1b llama-3.2-3b llama-3.1-8b; do args+=(--model-config "$shapes/$shape"); done
  "$GC_BUILD/bin/llama_throughput" "${args[@]}" >"$log" 2>&1 || rc=$?
  detail "\`llama_throughput ${args[*]#"$GC_PREPARED/"}\`: exit $rc" '```text'
  cut -c1-200 "$log" | tail -n 40 >>"$check_dir/detail.md"
  detail '```'
  case $rc in
    0) result PASS "$(grep -m1 'bf16 matmul' "$log" | sed -E 's/.*: bf16 matmul [0-9x]+: /peak bf16 /'); $(throughput_figures "$log")" ;;
    77) result SKIP "no GPU: $(head -1 "$log")" ;;
    *) result FAIL "exit $rc: $(grep -vE '^ ' "$log" | tail -1)" ;;
  esac
}

# ==== the run =================================================================

run_one_check() { # NAME: in a child, under the check's time limit
  check_dir=$GC_WORK/checks/$1
  rm -rf "$check_dir"
  mkdir -p "$check_dir"
  : >"$check_dir/detail.md"
  if [ "$1" != build ] && [ ! -x "$GC_BUILD/bin/diablo" ]; then
    result FAIL "nothing to run: the build did not produce $GC_BUILD/bin/diablo (see build)"
    return
  fi
  "check_$1"
}

run_check() { # NAME LIMIT
  local name=$1 limit=$2 start=$SECONDS rc=0
  # A rehearsal does the GPU's work on the CPU, which takes longer.
  [ "$GC_REHEARSE" = 1 ] && [ "$name" != build ] && limit=$((limit * 4))
  printf 'gpu-check: %-20s ... ' "$name"
  timeout -k 20 "$limit" "$BASH" "$self" --run-check "$name" >"$GC_WORK/logs/check-$name.log" 2>&1 || rc=$?
  local dir=$GC_WORK/checks/$name
  mkdir -p "$dir"
  echo $((SECONDS - start)) >"$dir/seconds"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo FAIL >"$dir/result"
    echo "timed out after ${limit}s" >"$dir/figures"
    printf '\nThe check ran past its %s s limit and was stopped.\n' "$limit" >>"$dir/detail.md"
  elif [ ! -f "$dir/result" ]; then
    echo FAIL >"$dir/result"
    echo "the check itself failed (exit $rc); see logs/check-$name.log" >"$dir/figures"
    check_dir=$dir detail_log "$GC_WORK/logs/check-$name.log" 20
  fi
  echo "$(cat "$dir/result") ($(cat "$dir/seconds") s) $(cat "$dir/figures")"
  write_report
}

find_python() {
  if [ -n "$python" ]; then
    "$python" -c 'import torch' 2>/dev/null || die "--python $python cannot import torch"
    return
  fi
  if [ -n "${DIABLO_PYTHON:-}" ] && "$DIABLO_PYTHON" -c 'import torch' 2>/dev/null; then
    python=$DIABLO_PYTHON
  elif command -v python3 >/dev/null && python3 -c 'import torch' 2>/dev/null; then
    python=python3
  elif [ -x "${DIABLO_CACHE:-$HOME/.cache/diablo}/venv/bin/python" ]; then
    python=${DIABLO_CACHE:-$HOME/.cache/diablo}/venv/bin/python
  else
    die "no Python with torch found: pass --python PY (scripts/setup.sh makes a venv)"
  fi
}

# Hides the Debian packages the compute plane's build could use (their
# headers, CMake and pkg-config files, GoogleTest's sources) in this private
# mount namespace, so the build sees what a bare GPU machine has.
hide_system_deps() {
  local empty_dir empty_file path hidden=0
  empty_dir=$(mktemp -d)
  empty_file=$(mktemp)
  while IFS= read -r path; do
    [ -e "$path" ] || continue
    if [ -d "$path" ]; then mount --bind "$empty_dir" "$path"; else mount --bind "$empty_file" "$path"; fi
    hidden=$((hidden + 1))
  done < <(for pkg in nlohmann-json3-dev libcli11-dev libyaml-cpp-dev libgtest-dev libgmock-dev googletest \
    libbenchmark-dev libgloo-dev libsentencepiece-dev; do dpkg -L "$pkg" 2>/dev/null || true; done |
    sed -nE -e 's#^(/usr/include/[^/]+).*#\1#p' -e 's#^(/usr/src/[^/]+).*#\1#p' \
      -e 's#^(/usr/(share|lib/[^/]+)/cmake/[^/]+).*#\1#p' -e 's#^(/usr/(share|lib/[^/]+)/pkgconfig/[^/]+)$#\1#p' \
      -e 's#^(/usr/lib/[^/]+/lib[^/]+\.(a|so))$#\1#p' | sort -u)
  echo "gpu-check: --hide-system-deps: hid $hidden files and folders of the Debian packages"
}

main() {
  local prepare_dir="" prepared="$repo/.gpu-check" out="$tmp/gpu-check-out" build="$repo/build-gpu-check"
  local work="$tmp/gpu-check-work" jobs cuda_arch="" only="" no_build=0 build_timeout=420
  local rehearse=0 hide=0 run_check_name=""
  local -a original_args=("$@")
  jobs=$(nproc)
  python=""
  while [ $# -gt 0 ]; do
    case $1 in
      --prepare) prepare_dir=${2:?--prepare needs a folder}; shift ;;
      --prepared) prepared=${2:?--prepared needs a folder}; shift ;;
      --out) out=${2:?--out needs a folder}; shift ;;
      --build) build=${2:?--build needs a folder}; shift ;;
      --work) work=${2:?--work needs a folder}; shift ;;
      --jobs) jobs=${2:?--jobs needs a number}; shift ;;
      --python) python=${2:?--python needs a path}; shift ;;
      --cuda-arch) cuda_arch=${2:?--cuda-arch needs a list}; shift ;;
      --only) only=${2:?--only needs a list}; shift ;;
      --no-build) no_build=1 ;;
      --build-timeout) build_timeout=${2:?--build-timeout needs seconds}; shift ;;
      --rehearse-on-cpu) rehearse=1 ;;
      --hide-system-deps) hide=1 ;;
      --run-check) run_check_name=$2; shift ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; die "unknown argument '$1'" ;;
    esac
    shift
  done
  if [ -n "$run_check_name" ]; then
    run_one_check "$run_check_name"
    return
  fi
  [[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs: expected a positive number, got '$jobs'"
  find_python
  if [ -n "$prepare_dir" ]; then
    prepare "$prepare_dir"
    return
  fi

  if [ "$hide" = 1 ] && [ -z "${GC_HIDDEN:-}" ]; then
    [ "$(id -u)" = 0 ] || die "--hide-system-deps needs root (unshare -m, mount --bind)"
    exec unshare -m env GC_HIDDEN=1 "$BASH" "$self" "${original_args[@]}"
  fi
  [ -n "${GC_HIDDEN:-}" ] && hide_system_deps

  [ -f "$prepared/deps/prepared-deps.txt" ] ||
    die "$prepared is not a prepared folder: run 'scripts/gpu-check.sh --prepare $prepared' on a machine with the Debian packages, and carry it along"
  prepared=$(cd "$prepared" && pwd)
  local tool
  for tool in cmake ninja timeout; do
    command -v "$tool" >/dev/null || die "$tool is not on the PATH"
  done
  local nvcc
  nvcc=$(command -v nvcc || true)
  [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
  [ -n "$nvcc" ] || die "nvcc not found: put CUDA's bin folder on the PATH (e.g. /usr/local/cuda/bin)"

  # What LibTorch will see: torch.cuda in the same Python whose LibTorch we link.
  local probe gpu=0 gpu_note="" cc=""
  probe=$("$python" - <<'PY'
import os, torch, torch.utils
print(torch.utils.cmake_prefix_path)
print(f"{torch.__version__} (CUDA {torch.version.cuda})")
if torch.cuda.is_available():
    major, minor = torch.cuda.get_device_capability(0)
    print(f"{major}{minor}")
    print(f"{torch.cuda.get_device_name(0)}, compute capability {major}.{minor}, "
          f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
else:
    print("")
    print("torch.cuda.is_available() is False")
nccl = os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "nccl", "include")
print(os.path.realpath(nccl) if os.path.exists(os.path.join(nccl, "nccl.h")) else "")
PY
  ) || die "$python could not report torch's CMake prefix and CUDA device"
  local torch_prefix torch_version nccl_include
  torch_prefix=$(sed -n 1p <<<"$probe")
  torch_version=$(sed -n 2p <<<"$probe")
  cc=$(sed -n 3p <<<"$probe")
  gpu_note=$(sed -n 4p <<<"$probe")
  nccl_include=$(sed -n 5p <<<"$probe")
  [ -n "$cc" ] && gpu=1
  if [ -z "$cuda_arch" ] && [ "$gpu" = 1 ]; then
    cuda_arch="${cc}-real"
    # LibTorch's CMake probes or defaults its own list; name the same device.
    export TORCH_CUDA_ARCH_LIST="${cc:0:${#cc}-1}.${cc: -1}"
  fi

  mkdir -p "$out" "$work" "$build"
  out=$(cd "$out" && pwd)
  work=$(cd "$work" && pwd)
  build=$(cd "$build" && pwd)
  rm -rf "$work/runs" "$work/checks" "$work/out" "$work/logs"
  mkdir -p "$work/runs" "$work/checks" "$work/out" "$work/logs"
  export GC_WORK=$work GC_OUT=$out GC_BUILD=$build GC_PREPARED=$prepared GC_PYTHON=$python
  export GC_GPU=$gpu GC_GPU_NOTE=$gpu_note GC_REHEARSE=$rehearse GC_JOBS=$jobs GC_NVCC=$nvcc
  export GC_CUDA_ARCH=$cuda_arch GC_TORCH_PREFIX=$torch_prefix GC_NCCL_INCLUDE=$nccl_include

  # The job every training check runs, with --set overrides per run.
  cat >"$work/job.json" <<EOF
{
  "model": "$prepared/models/tiny-llama",
  "method": {"name": "diablo", "blocks": 8, "dropout": 0.1,
             "target_modules": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]},
  "data": {"train": "$prepared/data/train.jsonl", "max_seq_len": 128},
  "optim": {"max_steps": $STEPS, "global_batch": 8, "lr": 0.01, "warmup_steps": 2,
            "scheduler": "cosine", "seed": 7},
  "precision": "fp32",
  "device": "cpu",
  "output_dir": "$work/out/unused"
}
EOF

  local driver="" commit
  if command -v nvidia-smi >/dev/null; then
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
  fi
  commit=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo "unknown (no git metadata)")
  {
    echo "| | |"
    echo "| --- | --- |"
    echo "| date | $(date -u '+%Y-%m-%d %H:%M:%S UTC') |"
    echo "| host | $(uname -n), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) |"
    echo "| GPU | $([ "$gpu" = 1 ] && echo "$gpu_note" || echo "none: $gpu_note")${driver:+, driver $driver} |"
    echo "| torch | $torch_version, $python |"
    echo "| nvcc | $("$nvcc" --version | grep -oE 'release [0-9.]+' | head -1) ($nvcc) |"
    echo "| cmake, ninja | $(cmake --version | head -1 | grep -oE '[0-9.]+$'), $(ninja --version) |"
    echo "| commit | $commit$(git -C "$repo" status --porcelain 2>/dev/null | grep -q . && echo ' + local changes') |"
    echo "| mode | $([ "$gpu" = 1 ] && echo GPU || echo "no GPU$([ "$rehearse" = 1 ] && echo ', GPU training runs rehearsed on the CPU')")$([ -n "${GC_HIDDEN:-}" ] && echo ', Debian packages hidden') |"
    echo "| tolerances | bf16 vs fp32 per step $TOL_PRECISION, with dropout $TOL_DROPOUT (step 1: $TOL_PRECISION), resume and one-rank NCCL $TOL_SAME; docs/gpu-check.md says why |"
  } >"$work/header.md"

  echo "gpu-check: $([ "$gpu" = 1 ] && echo "$gpu_note" || echo "no GPU ($gpu_note)"); report: $out/gpu-check-report.md"
  local total_start=$SECONDS
  local -a selected=("${CHECKS[@]}")
  if [ -n "$only" ]; then
    IFS=, read -r -a selected <<<"$only"
    local name
    for name in "${selected[@]}"; do
      [ -n "${LIMIT[$name]:-}" ] || die "--only: unknown check '$name' (checks: ${CHECKS[*]})"
    done
  fi
  if [ "$no_build" = 0 ]; then
    run_check build "$build_timeout"
  else
    [ -x "$build/bin/diablo" ] || die "--no-build: $build/bin/diablo does not exist"
  fi
  local name
  for name in "${selected[@]}"; do run_check "$name" "${LIMIT[$name]}"; done

  local fail=0 skip=0 outcome
  for name in build "${selected[@]}"; do
    [ -f "$work/checks/$name/result" ] || continue
    outcome=$(cat "$work/checks/$name/result")
    [ "$outcome" = FAIL ] && fail=$((fail + 1))
    [ "$outcome" = SKIP ] && skip=$((skip + 1))
  done
  {
    echo
    echo "Total $((SECONDS - total_start)) s: $fail failed, $skip skipped."
  } >>"$work/header.md"
  write_report
  tar -czf "$out/gpu-check-logs.tar.gz" -C "$work" logs runs checks job.json 2>/dev/null || true
  echo "gpu-check: done in $((SECONDS - total_start)) s: $fail failed, $skip skipped; $out/gpu-check-report.md"
  if [ "$fail" != 0 ]; then exit 1; fi
  if [ "$skip" != 0 ]; then exit 3; fi
}

main "$@"
