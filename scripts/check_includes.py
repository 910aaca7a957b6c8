#!/usr/bin/env python3
"""The include graph of the sources against the map of docs/architecture.md.

Every C++ source folder belongs to one layer; a file may include headers of
its own layer and of the layers listed as allowed for it, nothing else:

  shared   spec/, formats/, text/     plain C++: none of the planes' libraries
  control  common/, server/,          gRPC, Protobuf, Abseil; never LibTorch
           client/, worker/agent/
  compute  kernels/, worker/model/,   LibTorch; never gRPC, Protobuf, Abseil
           worker/peft/, worker/train/,
           worker/cli/

and common/ depends on nothing above it (only itself).  The link-time twin of
this check is tests/architecture/plane_separation_test.sh (ldd on binaries).

Usage: check_includes.py [REPO]   exit 0 when clean, 1 listing each violation.
"""
import re
import sys
from pathlib import Path

LAYERS = {
    "spec": "shared",
    "formats": "shared",
    "text": "shared",
    "common": "common",
    "server": "control",
    "client": "control",
    "worker/agent": "control",
    "proto": "control",
    "kernels": "compute",
    "worker/model": "compute",
    "worker/peft": "compute",
    "worker/train": "compute",
    "worker/cli": "compute",
}

# Which layers' project headers a layer may include.
ALLOWED_LAYERS = {
    "shared": {"shared"},
    "common": {"common"},
    "control": {"control", "common", "shared"},
    "compute": {"compute", "shared"},
}

# Third-party headers that would pull a plane's libraries into the wrong place.
TORCH = re.compile(r"^(torch|ATen|c10|caffe2)/")
RPC = re.compile(r"^(grpc|grpcpp|grpc\+\+|google/protobuf|absl|prometheus)/|^diablo/v1/")
FORBIDDEN_LIBRARIES = {
    "shared": [(TORCH, "LibTorch"), (RPC, "gRPC/Protobuf/Abseil")],
    "common": [(TORCH, "LibTorch")],
    "control": [(TORCH, "LibTorch")],
    "compute": [(RPC, "gRPC/Protobuf/Abseil")],
}
# Generated protobuf headers are the control plane's own.
GENERATED = re.compile(r"^diablo/v1/")

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^">]+)[">]')
SOURCE_SUFFIXES = {".h", ".cc", ".cu", ".cuh"}


def layer_of(path: str):
    """The layer of a repository path, or None outside the mapped folders."""
    for folder in sorted(LAYERS, key=len, reverse=True):
        if path == folder or path.startswith(folder + "/"):
            return LAYERS[folder]
    return None


def violations(repo: Path):
    for file in sorted(repo.rglob("*")):
        if file.suffix not in SOURCE_SUFFIXES or not file.is_file():
            continue
        rel = file.relative_to(repo).as_posix()
        if rel.startswith(("build", "tests/", "bench/")):
            continue
        layer = layer_of(rel)
        if layer is None:
            continue
        for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
            match = INCLUDE.match(line)
            if not match:
                continue
            header = match.group(2)
            where = f"{rel}:{number}"
            for pattern, library in FORBIDDEN_LIBRARIES[layer]:
                if pattern.search(header) and not (layer == "control" and GENERATED.search(header)):
                    yield f"{where}: {layer} code includes {header} ({library})"
            target = layer_of(header)
            if target is not None and target not in ALLOWED_LAYERS[layer]:
                yield f"{where}: {layer} code includes {header}, which is {target}"


def main() -> int:
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    found = list(violations(repo))
    for problem in found:
        print(problem)
    if found:
        print(f"check_includes: {len(found)} includes cross the layers of docs/architecture.md")
        return 1
    print("check_includes: every include stays within its layer's allowed layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
