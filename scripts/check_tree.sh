#!/usr/bin/env bash
# Fails when the repository tracks what belongs outside it: runtime data
# (SQLite databases and their journals), model weights, or any file over
# 5 MiB.  The binaries keep their data under ~/.local/state/diablo and tests
# in temporary directories; models and data sets are fetched into the cache.
# Usage: scripts/check_tree.sh     (run by `make check` and .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
problems=()
while IFS= read -r file; do
  problems+=("$file: runtime data or model weights (keep them outside the tree)")
done < <(git ls-files | grep -E '\.(db|db-wal|db-shm|sqlite|sqlite3|gguf|safetensors|bin|pt)$' || true)
while IFS= read -r -d '' file; do
  [ -f "$file" ] || continue
  size=$(stat -c %s "$file")
  [ "$size" -le $((5 << 20)) ] || problems+=("$file: $((size >> 20)) MiB (large files are fetched or generated, not committed)")
done < <(git ls-files -z)
if [ ${#problems[@]} -gt 0 ]; then
  echo "check_tree: ${#problems[@]} tracked files do not belong in the repository:" >&2
  printf '  %s\n' "${problems[@]}" >&2
  echo "check_tree: git rm --cached them and let .gitignore keep them out" >&2
  exit 1
fi
echo "check_tree: $(git ls-files | wc -l) tracked files, no runtime data, none over 5 MiB"
