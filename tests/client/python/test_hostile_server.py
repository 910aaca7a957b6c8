#!/usr/bin/env python3
"""A scheduler that lies about artifact names cannot make a client write outside its folder.

Usage: test_hostile_server.py --bin BUILD/bin [unittest args]

Starts a fake diablo.v1.JobService on loopback (grpcio, in this process)
whose ListArtifacts answers with hostile names (absolute paths, '..',
control characters, one safe name listed before a hostile one) and whose
DownloadArtifact serves bytes for any name.  `diablo-ctl download` and the
Python SDK's Client.download are pointed at it; each must refuse, say which
name, and leave the filesystem exactly as it was: nothing outside the target
folder, and nothing inside it either.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import unittest
from concurrent import futures
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "client" / "python"))

parser = argparse.ArgumentParser(add_help=False)
parser.add_argument("--bin", default=str(ROOT / "build" / "bin"))
ARGS, rest = parser.parse_known_args()
sys.argv = [sys.argv[0], *rest]

_GEN = tempfile.TemporaryDirectory(prefix="diablo-pystubs-")
subprocess.run([sys.executable, str(ROOT / "client" / "python" / "generate.py"), _GEN.name], check=True,
               stdout=subprocess.DEVNULL)
sys.path.insert(0, _GEN.name)

import grpc  # noqa: E402

from diablo.v1 import job_pb2, job_pb2_grpc  # noqa: E402
from diablo_client import Client, DiabloError  # noqa: E402

PAYLOAD = b"written by a hostile server\n"
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class HostileJobService(job_pb2_grpc.JobServiceServicer):
    """Lists whatever names the test sets; serves PAYLOAD under any name."""

    names = []
    downloads = []

    def ListArtifacts(self, request, context):
        return job_pb2.ListArtifactsResponse(artifacts=[
            job_pb2.Artifact(name=name, size_bytes=len(PAYLOAD), sha256=DIGEST) for name in self.names])

    def DownloadArtifact(self, request, context):
        type(self).downloads.append(request.name)
        artifact = job_pb2.Artifact(name=request.name, size_bytes=len(PAYLOAD), sha256=DIGEST)
        yield job_pb2.DataChunk(artifact=artifact, offset=0, data=PAYLOAD, last=True)


def snapshot(root):
    """Every path under root (files and folders), relative."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


HOSTILE = {
    "parent": ["../escaped.txt"],
    "deep_parent": ["adapter/../../escaped.txt"],
    "absolute": ["{sandbox}/absolute.txt"],
    "control": ["adapter/\x1b[2Jcleared.txt"],
    "backslash": ["..\\escaped.txt"],
    "safe_then_hostile": ["adapter/ok.safetensors", "../escaped.txt"],
}


class HostileServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        job_pb2_grpc.add_JobServiceServicer_to_server(HostileJobService(), cls.server)
        cls.port = cls.server.add_insecure_port("127.0.0.1:0")
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop(grace=None)

    def setUp(self):
        self.sandbox = Path(tempfile.mkdtemp(prefix="diablo-hostile-"))
        # The target folder sits two levels down so '..' has somewhere to go.
        self.out = self.sandbox / "a" / "b" / "out"
        self.out.parent.mkdir(parents=True)
        HostileJobService.downloads = []

    def tearDown(self):
        subprocess.run(["rm", "-rf", str(self.sandbox)], check=False)

    def serve(self, names):
        HostileJobService.names = [n.format(sandbox=self.sandbox) for n in names]

    def assert_untouched(self, before):
        self.assertEqual(snapshot(self.sandbox), before, "the client wrote files")
        self.assertFalse(self.out.exists(), "nothing may be written, not even the target folder")
        self.assertEqual(HostileJobService.downloads, [], "names are checked before any transfer")

    def test_diablo_ctl_download_refuses_every_hostile_name(self):
        ctl = Path(ARGS.bin) / "diablo-ctl"
        if not ctl.exists():
            self.skipTest(f"no diablo-ctl in {ARGS.bin}")
        for case, names in HOSTILE.items():
            with self.subTest(case):
                self.serve(names)
                before = snapshot(self.sandbox)
                run = subprocess.run([str(ctl), "--server", f"127.0.0.1:{self.port}", "--token", "t",
                                      "download", "j-1", "--out", str(self.out)],
                                     capture_output=True, text=True, timeout=60,
                                     env={k: v for k, v in os.environ.items() if k != "DIABLO_CONFIG"})
                self.assertEqual(run.returncode, 1, run.stderr)
                self.assertIn("artifact name", run.stderr)
                self.assertIn("nothing was written", run.stderr)
                self.assertNotIn("\x1b", run.stderr, "a hostile name must not reach the terminal raw")
                self.assert_untouched(before)

    def test_sdk_download_refuses_every_hostile_name(self):
        client = Client(f"127.0.0.1:{self.port}", token="t", retries=0)
        for case, names in HOSTILE.items():
            with self.subTest(case):
                self.serve(names)
                before = snapshot(self.sandbox)
                with self.assertRaises(DiabloError) as caught:
                    client.download("j-1", self.out)
                self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
                self.assertIn("artifact name", caught.exception.message)
                self.assert_untouched(before)

    def test_a_safe_listing_still_downloads(self):
        """The refusals above come from the names, not from a broken fake."""
        self.serve(["adapter/adapter_model.safetensors"])
        paths = Client(f"127.0.0.1:{self.port}", token="t", retries=0).download("j-1", self.sandbox / "sdk")
        self.assertEqual([p.read_bytes() for p in paths], [PAYLOAD])
        if not (Path(ARGS.bin) / "diablo-ctl").exists():
            self.skipTest(f"no diablo-ctl in {ARGS.bin}")
        run = subprocess.run([str(Path(ARGS.bin) / "diablo-ctl"), "--server", f"127.0.0.1:{self.port}",
                              "--token", "t", "download", "j-1", "--out", str(self.out)],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual((self.out / "adapter" / "adapter_model.safetensors").read_bytes(), PAYLOAD)


if __name__ == "__main__":
    unittest.main()
