#!/usr/bin/env python3
"""Worker impersonation and revocation with real processes on loopback.

Usage: test_worker_identity.py --bin BUILD/bin [unittest args]

A real diablo-scheduler and a real diablo-worker ("node-a", its own worker
token) run a job whose trainer is a stand-in that reports `started` and waits.
A second worker token, held by an attacker speaking gRPC directly, then tries
to act as node-a: take over its name, heartbeat and lease as it, report and
complete under every small fence, upload a file.  Every call is refused and
the job runs on.  An admin then revokes node-a with `diablo-ctl workers
revoke`: the agent process exits with the reason, the job is queued again
without spending its retries, node-a's token cannot bring the name back, and
a node given a new token can.
"""

import json
import subprocess
import sys
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cluster import add_api_stubs_to_path, take_bin_arg, tiny_cluster  # noqa: E402

BIN = take_bin_arg()
add_api_stubs_to_path()

import grpc  # noqa: E402
from diablo.v1 import file_pb2, file_pb2_grpc, worker_pb2, worker_pb2_grpc  # noqa: E402


class WorkerIdentityTest(unittest.TestCase):
    def setUp(self):
        c = tiny_cluster(self, BIN)
        self.attacker_token = c.token("ops", "worker")
        self.admin_token = c.token("ops", "admin")
        c.start_scheduler()
        self.channel = grpc.insecure_channel(c.address)
        self.addCleanup(self.channel.close)
        self.workers = worker_pb2_grpc.WorkerServiceStub(self.channel)

    def call(self, method, request, credential=None, token=None):
        """The gRPC status code of one WorkerService call as the attacker."""
        metadata = [("authorization", f"Bearer {token or self.attacker_token}")]
        if credential is not None:
            metadata.append(("diablo-worker-credential", credential))
        try:
            method(request, metadata=metadata, timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    def register(self, name, token=None):
        request = worker_pb2.RegisterWorkerRequest(name=name, host="127.0.0.1", device_kind="cpu",
                                                   memory_bytes=16 << 30)
        metadata = [("authorization", f"Bearer {token or self.attacker_token}")]
        return self.workers.RegisterWorker(request, metadata=metadata, timeout=10)

    def worker(self, name):
        workers = self.cluster.ctl_json("workers", token=self.admin_token).get("workers", [])
        return next(w for w in reversed(workers) if w["name"] == name)

    def test_a_second_token_cannot_act_as_a_worker_and_an_admin_can_revoke_it(self):
        c = self.cluster
        node_a = c.start_worker("node-a", diablo=self.trainer)
        node_a_id = self.worker("node-a")["id"]
        job_id = c.submit(self.job, "--no-upload", "--max-retries", "0")
        c.wait_state(job_id, "JOB_STATE_RUNNING", timeout=60)

        # Taking over node-a's name would fail its attempt: refused.
        with self.assertRaises(grpc.RpcError) as taken:
            self.register("node-a")
        self.assertEqual(taken.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("another token", taken.exception.details())

        # The attacker's own registration gives it a credential for its own worker only.
        mine = self.register("attacker")
        self.assertTrue(mine.credential)
        heartbeat = worker_pb2.HeartbeatRequest(worker_id=node_a_id)
        lease = worker_pb2.LeaseJobRequest(worker_id=node_a_id, wait_ms=0)
        self.assertEqual(self.call(self.workers.Heartbeat, heartbeat), grpc.StatusCode.UNAUTHENTICATED,
                         "no credential")
        self.assertEqual(self.call(self.workers.Heartbeat, heartbeat, "dwc_" + "0" * 64),
                         grpc.StatusCode.UNAUTHENTICATED, "a guessed credential")
        self.assertEqual(self.call(self.workers.Heartbeat, heartbeat, mine.credential),
                         grpc.StatusCode.PERMISSION_DENIED)
        self.assertEqual(self.call(self.workers.LeaseJob, lease, mine.credential),
                         grpc.StatusCode.PERMISSION_DENIED)
        # Fences are small numbers, so try them all: none is the attacker's.
        for fence in range(0, 20):
            report = worker_pb2.ReportEventsRequest(fence=fence, rank=0, reports=[worker_pb2.TrainerReport(
                event_json=json.dumps({"event": "finished", "step": 100, "time": time.time()}))])
            self.assertEqual(self.call(self.workers.ReportEvents, report, mine.credential),
                             grpc.StatusCode.PERMISSION_DENIED, f"report under fence {fence}")
            done = worker_pb2.CompleteAttemptRequest(fence=fence, rank=0, succeeded=True, artifacts=[
                worker_pb2.UploadedArtifact(name="adapter/x", key=f"jobs/{job_id}/attempts/1/output/x",
                                            size_bytes=1, sha256="0" * 64)])
            self.assertEqual(self.call(self.workers.CompleteAttempt, done, mine.credential),
                             grpc.StatusCode.PERMISSION_DENIED, f"completion under fence {fence}")
        upload = file_pb2_grpc.FileServiceStub(self.channel)
        try:
            upload.UploadFile(iter([file_pb2.UploadFileRequest(header=file_pb2.UploadHeader(
                name="x.jsonl", size_bytes=0, sha256="0" * 64))]),
                metadata=[("authorization", f"Bearer {self.attacker_token}")], timeout=10)
            self.fail("a worker token uploaded a file")
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.PERMISSION_DENIED)
        job = c.job(job_id)
        self.assertEqual(job["state"], "JOB_STATE_RUNNING", "none of that touched the job")
        self.assertEqual(self.worker("node-a")["status"], "alive")

        # A user token cannot revoke; an admin's can.
        refused = c.ctl("workers", "revoke", node_a_id, check=False)
        self.assertEqual(refused.returncode, 1, refused.stderr)
        out = c.ctl("workers", "revoke", node_a_id, "--reason", "suspected compromise", token=self.admin_token)
        self.assertIn("diablo-scheduler token revoke", out.stdout)
        node_a.wait(timeout=30)
        self.assertNotEqual(node_a.returncode, 0, "the revoked agent exits with an error")
        log = (c.work / "node-a.log").read_text()
        self.assertIn("revoked by an admin", log)
        self.assertEqual(self.worker("node-a")["status"], "revoked")
        job = c.job(job_id)
        self.assertIn(job["state"], ("JOB_STATE_QUEUED", "JOB_STATE_ASSIGNED"),
                      "max_retries 0, yet not failed: the fleet's failure")
        reasons = [e["state"]["reason"] for e in c.events(job_id) if "state" in e]
        self.assertTrue(any("revoked by an admin: suspected compromise" in r for r in reasons), reasons)

        # node-a's token cannot bring the name back ...
        again = subprocess.run(
            [c.bin / "diablo-worker", "--server", c.address, "--name", "node-a", "--work-dir",
             c.work / "worker-node-a-again", "--diablo", self.trainer], env={"DIABLO_TOKEN": c.worker_token, "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=30)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("new worker token", again.stderr)
        # ... a node given a new token can, and the job runs there.
        c.worker_token = c.token("ops", "worker")
        c.start_worker("node-a", diablo=self.trainer)
        c.wait_state(job_id, "JOB_STATE_RUNNING", timeout=60)
        self.assertNotEqual(self.worker("node-a")["id"], node_a_id)


if __name__ == "__main__":
    unittest.main(verbosity=2)
