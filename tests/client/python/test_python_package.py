"""`pip install ./client/python` gives a self-contained, typed SDK: built into
a temporary target (no network: --no-build-isolation with the test venv's
setuptools and grpcio-tools), then imported from outside the source tree
with the fallback generator disabled, so only what the wheel carries counts.

Run: python test_python_package.py
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


class PythonPackageTest(unittest.TestCase):
    def test_the_installed_package_carries_typed_api_modules(self):
        with tempfile.TemporaryDirectory(prefix="diablo-pip-") as tmp:
            source = Path(tmp) / "src"
            # Build from a copy, as pip would from a fresh checkout, so the
            # source tree gets no build/ or egg-info litter.
            shutil.copytree(REPO / "client" / "python", source / "client" / "python")
            shutil.copytree(REPO / "proto", source / "proto")
            target = Path(tmp) / "site"
            out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                                  "--no-index", "--target", target, source / "client" / "python"],
                                 capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            for typed in ("diablo_client/py.typed", "diablo/py.typed", "diablo/v1/py.typed", "diablo/v1/job_pb2.pyi"):
                self.assertTrue((target / typed).exists(), typed)
            check = ("import diablo_client, diablo.v1.job_pb2 as job\n"
                     "assert diablo_client.__file__.startswith(%r), diablo_client.__file__\n"
                     "assert 'eval_loss' in job.Job.DESCRIPTOR.fields_by_name\n"
                     "assert hasattr(diablo_client.Client, 'submit') and hasattr(diablo_client.Client, 'download')\n"
                     "print('ok')" % str(target))
            env = dict(os.environ, PYTHONPATH=str(target), DIABLO_PROTO_DIR=str(Path(tmp) / "missing"),
                       DIABLO_STUBS_CACHE=str(Path(tmp) / "no-cache"))
            run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, cwd=tmp)
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
            self.assertFalse((Path(tmp) / "no-cache").exists(), "the stubs came from the wheel, not generated")


if __name__ == "__main__":
    unittest.main(verbosity=2)
