#!/usr/bin/env bash
# The two planes must stay apart (DESIGN.md): control-plane binaries never load
# LibTorch, compute-plane binaries never load gRPC.  Checked on what the
# dynamic loader actually resolves (ldd), not on what CMake was asked for.
# Usage: plane_separation_test.sh --control BIN... --compute BIN...
set -u
mode=""; control=(); compute=()
for arg in "$@"; do
  case "$arg" in
    --control) mode=control ;;
    --compute) mode=compute ;;
    *) if [ "$mode" = control ]; then control+=("$arg"); else compute+=("$arg"); fi ;;
  esac
done

failed=0
check() {  # check BINARY FORBIDDEN_REGEX PLANE
  local bin=$1 forbidden=$2 plane=$3 libs bad
  if [ ! -x "$bin" ]; then echo "FAIL: $bin does not exist"; failed=1; return; fi
  if ! libs=$(ldd "$bin" 2>&1); then echo "FAIL: ldd $bin: $libs"; failed=1; return; fi
  bad=$(grep -E "$forbidden" <<<"$libs" | awk '{print $1}' | tr '\n' ' ')
  if [ -n "$bad" ]; then
    echo "FAIL: $(basename "$bin") is $plane plane but loads: $bad"; failed=1
  else
    echo "ok: $(basename "$bin") ($plane plane, $(wc -l <<<"$libs") libraries, none forbidden)"
  fi
}
# The compute check must see LibTorch at all, or it proves nothing.
for bin in "${compute[@]}"; do
  check "$bin" 'libgrpc|libgpr\.|libprotobuf|libabsl' compute
  if ! ldd "$bin" | grep -qE 'libtorch|libc10'; then
    echo "FAIL: $(basename "$bin") does not load LibTorch; is this the compute binary?"; failed=1
  fi
done
for bin in "${control[@]}"; do
  check "$bin" 'libtorch|libc10|libcudart|libnccl' control
done
exit $failed
