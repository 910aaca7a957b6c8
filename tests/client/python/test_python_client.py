#!/usr/bin/env python3
"""The Python SDK (client/python/diablo_client) against a real service on loopback.

Usage: test_python_client.py --bin BUILD/bin --model SmolLM2-135M-Instruct.Q4_1.gguf [unittest args]

Generates the API modules into a temporary directory, starts a scheduler and
one CPU worker (tests/e2e/cluster.py), and through the SDK alone:
uploads a dataset, submits a 4-step DiaBlo job, follows its events to
SUCCEEDED, downloads and checks the adapter; follows a job across a
scheduler restart (watch() reconnects, no event lost or repeated); and
checks that API errors come back with the right gRPC codes.  Skips when
the model file is missing.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "client" / "python"))

import cluster  # noqa: E402

parser = argparse.ArgumentParser(add_help=False)
parser.add_argument("--bin", default=str(ROOT / "build" / "bin"))
parser.add_argument("--model", default=os.environ.get("DIABLO_MODEL_GGUF", ""))
ARGS, rest = parser.parse_known_args()
sys.argv = [sys.argv[0], *rest]

# The API modules: generated fresh for this run (never the committed tree's or a stale cache's).
_GEN = tempfile.TemporaryDirectory(prefix="diablo-pystubs-")
subprocess.run([sys.executable, str(ROOT / "client" / "python" / "generate.py"), _GEN.name], check=True,
               stdout=subprocess.DEVNULL)
sys.path.insert(0, _GEN.name)

import grpc  # noqa: E402

import diablo_client  # noqa: E402
from diablo_client import Client, DiabloError, job_pb2  # noqa: E402

assert diablo_client.job_pb2.__file__.startswith(_GEN.name), diablo_client.job_pb2.__file__

MODEL = Path(ARGS.model) if ARGS.model else None
SKIP = None
if MODEL is None or not MODEL.is_file():
    SKIP = f"model file not found ({ARGS.model or 'pass --model PATH'}): the service test needs the real GGUF model"
elif not (Path(ARGS.bin) / "diablo-scheduler").exists():
    SKIP = f"no diablo-scheduler in {ARGS.bin} (pass --bin BUILD/bin)"


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def job_spec(model, train, steps=4, save_every=2, **optim):
    """The job tests/e2e/cluster.py's write_job describes, as the SDK takes it."""
    return {
        "model": model,
        "method": {"name": "diablo", "blocks": 32},
        "data": {"train": train, "max_seq_len": 64},
        "optim": {"max_steps": steps, "global_batch": 4, "lr": 3.0e-3, **optim},
        "save_every": save_every,
        "threads": 1,
    }


@unittest.skipIf(SKIP is not None, SKIP)
class PythonClientTest(unittest.TestCase):
    def setUp(self):
        # The SDK tests name the model by its path: the operator lets tenant-a read it in place.
        self.cluster = cluster.Cluster(ARGS.bin, input_roots=[MODEL.parent])
        self.addCleanup(self.cluster.stop)
        self.cluster.start_scheduler()
        self.cluster.start_worker("w1")
        self.client = Client(self.cluster.address, token=self.cluster.user_token, timeout=30)
        self.addCleanup(self.client.close)
        self.data = self.cluster.work / "data"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_data.py"), str(self.data), "64"], check=True,
                       stdout=subprocess.DEVNULL)

    def tearDown(self):
        if hasattr(self, "_outcome") and not self._ok():
            print("\n" + self.cluster.logs_tail(), file=sys.stderr)
        # addCleanup closes the client and stops the cluster (also when setUp failed half way).

    def _ok(self):
        result = getattr(self._outcome, "result", None)
        errors = list(getattr(result, "errors", [])) + list(getattr(result, "failures", []))
        return not any(test is self for test, _ in errors)

    def test_train_watch_download(self):
        c = self.client
        train = self.data / "train.jsonl"
        file_id = c.upload_file(train)
        self.assertTrue(file_id)
        self.assertEqual(c.upload_file(train), file_id, "a second upload of the same content is deduplicated")
        [uploaded] = [f for f in c.list_files() if f.id == file_id]
        self.assertEqual((uploaded.size_bytes, uploaded.sha256), (train.stat().st_size, sha256(train)))

        # data.train is a relative path (uploaded by the SDK: the same file id);
        # the model a file:// URI, which the scheduler and the worker read in place.
        spec = job_spec(f"file://{MODEL.resolve()}", "train.jsonl")
        submitted = time.time()
        job = c.submit(spec, name="py-sdk", labels={"suite": "python-client"}, base_dir=self.data,
                       idempotency_key="py-sdk-test-1")
        self.assertTrue(job.id)
        self.assertEqual(job.spec.data.train, f"upload://{file_id}")
        self.assertEqual(job.spec.optim.max_steps, 4)
        self.assertEqual(c.submit(spec, name="py-sdk", labels={"suite": "python-client"}, base_dir=self.data,
                                  idempotency_key="py-sdk-test-1").id, job.id, "a retry: one key, one job")
        with self.assertRaises(DiabloError) as reused:
            c.submit(spec, base_dir=self.data, idempotency_key="py-sdk-test-1")  # no name or labels
        self.assertEqual(reused.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn(job.id, reused.exception.message, "a different request under the key names the first job")
        self.assertIn(job.id, [j.id for j in c.list(labels={"suite": "python-client"})])

        states, steps, checkpoints, seqs = [], [], [], []
        for event in c.watch(job.id):
            seqs.append(event.seq)
            kind = event.WhichOneof("kind")
            if kind == "state":
                states.append(event.state.to)
            elif kind == "step":
                steps.append(event.step.step)
            elif kind == "checkpoint":
                checkpoints.append(event.checkpoint.step)
        final = c.get(job.id)
        self.assertEqual(final.state, job_pb2.JOB_STATE_SUCCEEDED, final.reason)
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(len(seqs), len(set(seqs)))
        S = job_pb2
        self.assertEqual([s for s in states if s in (S.JOB_STATE_QUEUED, S.JOB_STATE_ASSIGNED, S.JOB_STATE_RUNNING,
                                                     S.JOB_STATE_SUCCEEDED)],
                         [S.JOB_STATE_QUEUED, S.JOB_STATE_ASSIGNED, S.JOB_STATE_RUNNING, S.JOB_STATE_SUCCEEDED],
                         [diablo_client.state_name(s) for s in states])
        self.assertTrue(steps, "no step events")
        self.assertEqual(steps, sorted(set(steps)), "step events must increase")
        self.assertEqual(steps[-1], 4)
        self.assertTrue(checkpoints, "no checkpoint events")
        self.assertGreaterEqual(final.created_at, int(submitted) - 1)
        # A resumed watch sees only what came after the seq it names.
        self.assertEqual([e.seq for e in c.watch(job.id, after_seq=seqs[-2], follow=False)], [seqs[-1]])
        self.assertEqual(c.wait(job.id).state, job_pb2.JOB_STATE_SUCCEEDED)

        artifacts = {a.name: a for a in c.artifacts(job.id)}
        for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json"):
            self.assertIn(name, artifacts)
        out = self.cluster.work / "download"
        paths = c.download(job.id, out)
        self.assertEqual(sorted(str(p.relative_to(out)) for p in paths), sorted(artifacts))
        self.assertFalse([p for p in out.rglob("*") if p.name.endswith(".partial")], "partial files left behind")
        for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json"):
            path = out / name
            self.assertTrue(path.is_file(), name)
            self.assertEqual(sha256(path), artifacts[name].sha256, name)
            self.assertEqual(path.stat().st_size, artifacts[name].size_bytes, name)
        config = json.loads((out / "adapter" / "adapter_config.json").read_text())
        self.assertEqual(config.get("num_blocks"), 32, config)

        from safetensors.numpy import load_file
        tensors = load_file(str(out / "adapter" / "adapter_model.safetensors"))
        self.assertTrue(tensors, "the adapter holds no tensors")
        names = sorted(tensors)
        self.assertTrue(all(n.endswith(".block_A") for n in names), names[:5])
        self.assertTrue(any("self_attn" in n for n in names) and any("mlp" in n for n in names), names[:5])
        self.assertTrue(any(bool((t != 0).any()) for t in tensors.values()),
                        "every DiaBlo block is still zero: training did not change the adapter")

        # A corrupted record is refused and leaves nothing behind.
        target = self.cluster.work / "corrupt"
        bad = job_pb2.Artifact()
        bad.CopyFrom(artifacts["adapter/adapter_config.json"])
        bad.sha256 = "0" * 64
        target.mkdir()
        with self.assertRaises(diablo_client.ChecksumError):
            c._download_one(job.id, bad, target / "adapter_config.json")
        self.assertEqual(list(target.iterdir()), [])

    def test_watch_resumes_across_a_scheduler_restart(self):
        c = self.client
        job = c.submit(job_spec(f"file://{MODEL.resolve()}", str(self.data / "train.jsonl"), save_every=0))
        seqs, states, restarted = [], [], False
        for event in c.watch(job.id):
            seqs.append(event.seq)
            if event.WhichOneof("kind") == "state":
                states.append(event.state.to)
                if event.state.to == job_pb2.JOB_STATE_RUNNING and not restarted:
                    # The stream breaks under the generator; it must reconnect by itself.
                    port = self.cluster.port
                    self.cluster.kill9(self.cluster.scheduler)
                    self.cluster.start_scheduler(port=port)
                    restarted = True
        self.assertTrue(restarted, [diablo_client.state_name(s) for s in states])
        self.assertEqual(states[-1], job_pb2.JOB_STATE_SUCCEEDED, c.get(job.id).reason)
        self.assertEqual(seqs, [e.seq for e in c.events(job.id)], "the resumed watch lost or repeated events")

    def test_error_codes(self):
        c = self.client
        with self.subTest("wrong token"):
            with Client(self.cluster.address, token="not-a-token", timeout=10) as bad:
                with self.assertRaises(DiabloError) as caught:
                    bad.list()
            self.assertEqual(caught.exception.code, grpc.StatusCode.UNAUTHENTICATED, caught.exception)
            self.assertIsInstance(caught.exception.__cause__, grpc.RpcError)
        with self.subTest("unknown job"):
            with self.assertRaises(DiabloError) as caught:
                c.get("job-does-not-exist")
            self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND, caught.exception)
        with self.subTest("negative learning rate"):
            train = self.data / "train.jsonl"
            with self.assertRaises(DiabloError) as caught:
                c.submit(job_spec(str(MODEL.resolve()), str(train), lr=-1), upload_local=False)
            self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT, caught.exception)
            self.assertIn("optim.lr", caught.exception.message)
        with self.subTest("unknown spec field (refused by the client)"):
            with self.assertRaises(DiabloError) as caught:
                c.submit({"model": str(MODEL), "optim": {"learning_rate": 1}}, upload_local=False)
            self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT, caught.exception)
        self.assertEqual(c.list(), [], "no job was created by the refused submits")


if __name__ == "__main__":
    try:
        unittest.main(verbosity=2)
    finally:
        _GEN.cleanup()
