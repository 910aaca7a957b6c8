#!/usr/bin/env bash
# scripts/check_includes.py on the repository (every include stays within the
# layers of docs/architecture.md), and first on small trees with one crossing
# each, so the check is known to fail where it must.
# Usage: include_graph_test.sh REPO
set -u
repo=$1
check="python3 $repo/scripts/check_includes.py"
scratch=$(mktemp -d); trap 'rm -rf "$scratch"' EXIT
failed=0

expect() {  # expect EXIT_CODE NAME FILE LINE: a tree with one file holding LINE
  local want=$1 name=$2 file=$3 line=$4 tree=$scratch/$2
  mkdir -p "$tree/$(dirname "$file")"
  printf '%s\n' "$line" >"$tree/$file"
  out=$($check "$tree"); got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAIL: $name: exit $got, expected $want: $out"; failed=1
  else
    echo "ok: $name"
  fi
}
expect 1 shared_includes_compute spec/a.h '#include "worker/model/llama.h"'
expect 1 shared_includes_torch formats/a.cc '#include <ATen/ATen.h>'
expect 1 shared_includes_abseil spec/b.cc '#include "absl/status/status.h"'
expect 1 common_includes_shared common/a.cc '#include "spec/train_config.h"'
expect 1 control_includes_compute server/a.cc '#include "worker/train/trainer.h"'
expect 1 control_includes_torch worker/agent/a.cc '#include <torch/torch.h>'
expect 1 compute_includes_control worker/train/a.cc '#include "common/sha256.h"'
expect 1 compute_includes_grpc kernels/a.cc '#include <grpcpp/grpcpp.h>'
expect 1 compute_includes_proto worker/cli/a.cc '#include "diablo/v1/jobs.pb.h"'
expect 0 control_includes_shared server/b.cc '#include "spec/train_config.h"'
expect 0 control_includes_proto client/b.cc '#include "diablo/v1/jobs.pb.h"'
expect 0 compute_includes_shared worker/peft/b.cc '#include "formats/gguf.h"'

if out=$($check "$repo"); then
  echo "ok: repository: $out"
else
  echo "FAIL: repository:"; echo "$out"; failed=1
fi
exit $failed
