#!/usr/bin/env python3
"""Generates the Python protobuf and gRPC modules of the diablo API.

Usage: generate.py OUT_DIR [--proto-dir DIR]

Compiles every proto/diablo/v1/*.proto of the source tree (or --proto-dir)
with grpc_tools.protoc into OUT_DIR, so that with OUT_DIR on sys.path

    import diablo.v1.job_pb2
    import diablo.v1.job_pb2_grpc

work.  It writes the package's __init__.py files and a STAMP file holding a
digest of the .proto files it compiled (the SDK uses it to notice stale
modules).  Nothing it writes is committed: run it after every change of the
.proto files.  It needs grpcio-tools (pip install grpcio-tools).
"""

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

# The source tree's proto directory: client/python/generate.py -> proto/
DEFAULT_PROTO_DIR = Path(__file__).resolve().parent.parent.parent / "proto"
PACKAGE = Path("diablo") / "v1"
STAMP = "STAMP"


def proto_files(proto_dir):
    """The .proto files of the diablo.v1 package, sorted, as paths under proto_dir."""
    files = sorted((Path(proto_dir) / PACKAGE).glob("*.proto"))
    if not files:
        raise FileNotFoundError(f"no .proto files in {Path(proto_dir) / PACKAGE}")
    return files


def digest(proto_dir):
    """SHA-256 over the names and contents of the .proto files (the STAMP)."""
    sha = hashlib.sha256()
    for path in proto_files(proto_dir):
        sha.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()


def generate(out_dir, proto_dir=DEFAULT_PROTO_DIR):
    """Compiles the protos into out_dir (replacing its diablo/ package).

    The modules are written to a temporary directory next to out_dir first and
    moved into place at the end, so a reader never sees half a package and two
    processes generating at once leave one complete copy."""
    try:
        from grpc_tools import protoc
    except ImportError as e:
        raise RuntimeError("generating the diablo API modules needs grpcio-tools (pip install grpcio-tools)") from e
    import importlib.resources

    proto_dir = Path(proto_dir).resolve()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = proto_files(proto_dir)
    stamp = digest(proto_dir)
    # google/protobuf/*.proto (well-known types) ship inside grpc_tools.
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory(prefix=".diablo-gen-", dir=out_dir) as tmp:
        args = ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={tmp}",
                f"--grpc_python_out={tmp}", f"--pyi_out={tmp}", *[str(p.relative_to(proto_dir)) for p in files]]
        if protoc.main(args) != 0:
            raise RuntimeError(f"grpc_tools.protoc failed on {proto_dir} (see its messages above)")
        for package in (Path(tmp) / "diablo", Path(tmp) / PACKAGE):
            (package / "__init__.py").touch()
        (Path(tmp) / "diablo" / STAMP).write_text(stamp + "\n")
        target = out_dir / "diablo"
        if target.exists():
            # Move the old copy aside first: a rename over a non-empty directory fails.
            old = Path(tempfile.mkdtemp(prefix=".diablo-old-", dir=out_dir))
            try:
                os.replace(target, old / "diablo")
            except FileNotFoundError:
                pass  # another generator removed it meanwhile
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(Path(tmp) / "diablo", target)
        except OSError:
            # Another process put a complete copy there between our two renames.
            if not (target / STAMP).exists():
                raise
    return out_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="directory to put the diablo/ package in (add it to PYTHONPATH)")
    parser.add_argument("--proto-dir", default=str(DEFAULT_PROTO_DIR),
                        help="directory holding diablo/v1/*.proto (default: the source tree's proto/)")
    args = parser.parse_args()
    try:
        out = generate(args.out_dir, args.proto_dir)
    except (RuntimeError, FileNotFoundError) as e:
        sys.exit(f"generate.py: {e}")
    print(out)


if __name__ == "__main__":
    main()
