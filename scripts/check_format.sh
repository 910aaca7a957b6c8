#!/usr/bin/env bash
# Fails when a tracked C++ or CUDA source differs from what clang-format makes
# of it (.clang-format at the root), listing the files and how to fix them.
# clang-format 14 (Debian 12's, installed by scripts/setup.sh) is the
# reference: other major versions format some constructs differently.
# Usage: scripts/check_format.sh     (run by .ci/run; `make format` fixes)
set -euo pipefail
cd "$(dirname "$0")/.."
formatter=$(command -v clang-format-14 || command -v clang-format || true)
if [ -z "$formatter" ]; then
  echo "check_format: clang-format is not installed (Debian: clang-format; make setup installs it)" >&2
  exit 2
fi
version=$("$formatter" --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1)
[ "${version%%.*}" = 14 ] || echo "check_format: warning: $formatter is version $version; the reference is 14" >&2

mapfile -t sources < <(git ls-files '*.h' '*.cc' '*.cu' '*.cuh')
unformatted=()
for file in "${sources[@]}"; do
  "$formatter" --dry-run -Werror "$file" >/dev/null 2>&1 || unformatted+=("$file")
done
if [ ${#unformatted[@]} -gt 0 ]; then
  echo "check_format: ${#unformatted[@]} of ${#sources[@]} files are not clang-formatted:" >&2
  printf '  %s\n' "${unformatted[@]}" >&2
  echo "check_format: run 'make format' (or clang-format -i FILE) and commit the result" >&2
  exit 1
fi
echo "check_format: ${#sources[@]} files formatted ($formatter $version)"
