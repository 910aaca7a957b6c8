#!/usr/bin/env bash
# Proves that the compute plane builds without any control-plane package:
# in a private mount namespace, the headers, CMake configs, libraries and
# code generators of gRPC, Protobuf, Abseil, SQLite and prometheus-cpp are
# hidden (empty directories / files bound over them), then a
# -DDIABLO_ENGINE_ONLY=ON build of `diablo` is configured and built, and the
# binary is run.  Needs root (unshare -m); the system itself is untouched.
# Usage: scripts/check_engine_only.sh [BUILD_DIR]   (default build-engine)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$repo/build-engine}
venv=${DIABLO_CACHE:-$HOME/.cache/diablo}/venv
torch_prefix=$("$venv/bin/python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')

exec unshare -m bash -s "$repo" "$build" "$torch_prefix" <<'INNER'
set -euo pipefail
repo=$1 build=$2 torch_prefix=$3
empty_dir=$(mktemp -d); empty_file=$(mktemp)
hidden=0
hide() {
  for path in "$@"; do
    [ -e "$path" ] || continue
    if [ -d "$path" ]; then mount --bind "$empty_dir" "$path"; else mount --bind "$empty_file" "$path"; fi
    hidden=$((hidden + 1))
  done
}
lib=/usr/lib/x86_64-linux-gnu
hide /usr/include/grpc /usr/include/grpcpp /usr/include/grpc++ /usr/include/google/protobuf \
     /usr/include/absl /usr/include/prometheus "$lib/cmake/grpc" "$lib/cmake/absl" \
     "$lib/cmake/prometheus-cpp" /usr/include/sqlite3.h /usr/bin/protoc /usr/bin/grpc_cpp_plugin
hide "$lib"/libgrpc*.so* "$lib"/libgpr.so* "$lib"/libprotobuf*.so* "$lib"/libprotoc*.so* \
     "$lib"/libabsl_*.so* "$lib"/libsqlite3.so* "$lib"/libprometheus-cpp*.so*
echo "check_engine_only: hid $hidden control-plane files and directories"
rm -rf "$build"
cmake -S "$repo" -B "$build" -G Ninja -DDIABLO_ENGINE_ONLY=ON -DDIABLO_BUILD_BENCH=OFF \
      -DDIABLO_BUILD_TESTS=OFF -DCMAKE_PREFIX_PATH="$torch_prefix" >/dev/null
cmake --build "$build" --target diablo
"$build/bin/diablo" version
if ldd "$build/bin/diablo" | grep -E 'libgrpc|libprotobuf|libabsl'; then
  echo "check_engine_only: FAIL: diablo loads a control-plane library"; exit 1
fi
echo "check_engine_only: OK: the compute plane configures and builds without gRPC, Protobuf, Abseil, SQLite"
INNER
