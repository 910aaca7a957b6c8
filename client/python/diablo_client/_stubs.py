"""Finds the generated diablo.v1 modules, generating them when they are missing.

Order of preference:

1. ``diablo.v1`` is importable already (``generate.py OUT`` was run and OUT is
   on ``PYTHONPATH``, or an application put it on ``sys.path``): used as is.
2. Otherwise the .proto files are located (``$DIABLO_PROTO_DIR``, else the
   ``proto/`` directory of the source tree this package sits in) and compiled
   with grpcio-tools into a cache directory keyed by their digest,
   ``$DIABLO_STUBS_CACHE`` or ``~/.cache/diablo/python-stubs/<digest>``, which
   is then put on ``sys.path``.  Changed .proto files get a fresh directory.
"""

import importlib
import importlib.util
import os
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_MODULES = ("file", "job", "spec", "system", "worker")


class StubsUnavailable(ImportError):
    """The generated modules are not importable and cannot be generated here."""


def _proto_dir():
    env = os.environ.get("DIABLO_PROTO_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(_HERE.parent.parent.parent / "proto")  # client/python/diablo_client -> repo/proto
    for candidate in candidates:
        if (candidate / "diablo" / "v1").is_dir():
            return candidate
    return None


def _generator():
    """The generate module next to this package (client/python/generate.py)."""
    path = _HERE.parent / "generate.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("_diablo_generate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _import_all():
    return {name: (importlib.import_module(f"diablo.v1.{name}_pb2"), importlib.import_module(f"diablo.v1.{name}_pb2_grpc"))
            for name in _MODULES}


def load():
    """Returns {module name: (pb2 module, pb2_grpc module)} for file, job, spec, system, worker."""
    try:
        return _import_all()
    except ModuleNotFoundError as first:
        missing = first.name or ""
        if missing != "diablo" and not missing.startswith("diablo."):
            raise  # something else is missing (grpc, protobuf): generating does not help
        error = first
    proto_dir = _proto_dir()
    generator = _generator()
    if proto_dir is None or generator is None:
        raise StubsUnavailable(
            "the diablo API modules (diablo.v1.*_pb2) are not importable: run "
            "`python client/python/generate.py OUT` and add OUT to PYTHONPATH "
            "(or set DIABLO_PROTO_DIR to the repository's proto/ directory)") from error
    digest = generator.digest(proto_dir)
    cache = Path(os.environ.get("DIABLO_STUBS_CACHE") or
                 Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "diablo" / "python-stubs")
    out = cache / digest[:16]
    stamp = out / "diablo" / generator.STAMP
    if not (stamp.exists() and stamp.read_text().strip() == digest):
        try:
            generator.generate(out, proto_dir)
        except Exception as e:  # grpcio-tools missing, unwritable cache, protoc errors
            raise StubsUnavailable(f"cannot generate the diablo API modules into {out}: {e}") from e
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    # A failed import above may have cached a half-found package.
    for name in [m for m in sys.modules if m == "diablo" or m.startswith("diablo.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    return _import_all()
