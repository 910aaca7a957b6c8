"""Build hook: compile proto/diablo/v1/*.proto into the wheel's `diablo`
package (with .pyi type stubs) so an installed diablo_client needs neither
the source tree nor grpcio-tools at run time.  Metadata is in pyproject.toml."""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        spec = importlib.util.spec_from_file_location("_diablo_generate", HERE / "generate.py")
        generate = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(generate)
        proto_dir = HERE.parent.parent / "proto"
        if not (proto_dir / "diablo" / "v1").is_dir():
            raise SystemExit(f"diablo-client: {proto_dir} not found; build from a checkout of the repository")
        generate.generate(self.build_lib, proto_dir)
        for typed in (Path(self.build_lib) / "diablo", Path(self.build_lib) / "diablo" / "v1"):
            (typed / "py.typed").touch()


setup(cmdclass={"build_py": BuildWithStubs})
