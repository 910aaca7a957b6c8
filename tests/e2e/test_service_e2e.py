"""The service end to end on loopback: a real diablo-scheduler, real
diablo-worker agents and real `diablo train` processes fine-tuning the real
SmolLM2 model — jobs across two workers, a worker killed mid-run, the
scheduler killed mid-run, a crashing trainer, cancellation, and bad input.

Run: python test_service_e2e.py --bin BUILD/bin --model SmolLM2.gguf [unittest args]
"""

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import unittest
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import Cluster, write_job  # noqa: E402

BIN = None
MODEL = None
REPO = Path(__file__).resolve().parents[2]


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _try(call):
    try:
        call()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not yet"
        return False


def trainer_pids(work_dir):
    """Processes running `diablo train` inside a worker's work directory."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(cmdline) > 2 and cmdline[1] == b"train" and str(work_dir).encode() in cmdline[2]:
            pids.append(int(proc.name))
    return pids


class ServiceTest(unittest.TestCase):
    def setUp(self):
        if not MODEL or not Path(MODEL).exists():
            self.skipTest("the SmolLM2 model is not available (scripts/setup.sh fetches it)")
        self.cluster = Cluster(BIN, input_roots=[Path(MODEL).parent])
        self.work = self.cluster.work
        subprocess.run([sys.executable, REPO / "scripts/make_demo_data.py", self.work, "64"], check=True,
                       capture_output=True)
        self.train = self.work / "train.jsonl"

    def tearDown(self):
        if hasattr(self, "cluster"):
            self.cluster.stop()

    def job_file(self, name, steps, save_every=0):
        return write_job(self.work / f"{name}.yaml", MODEL, self.train, steps, save_every)

    def step_events(self, job_id):
        return [e for e in self.cluster.events(job_id) if "step" in e]

    # ---- scenarios

    def test_two_workers_run_jobs_and_the_download_matches_the_trainers_output(self):
        c = self.cluster
        c.start_scheduler()
        c.start_worker("w1")
        c.start_worker("w2")
        jobs = [c.submit(self.job_file(f"job{i}", 4, save_every=2)) for i in range(2)]
        done = [c.wait_state(j, "JOB_STATE_SUCCEEDED") for j in jobs]
        placed_on = {w["name"] for w in c.list_workers() for j in done if j["workers"][0] == w["id"]}
        self.assertEqual(placed_on, {"w1", "w2"}, "each worker ran one of the two jobs")

        for job in done:
            out = self.work / f"download-{job['id']}"
            c.ctl("download", job["id"], "--out", out)
            written = list(self.work.glob(f"worker-*/jobs/{job['id']}-attempt-1-rank-0/output/adapter/"
                                          "adapter_model.safetensors"))
            self.assertEqual(len(written), 1, "the trainer's own output is kept (--keep-job-dirs)")
            self.assertEqual(sha256(out / "adapter/adapter_model.safetensors"), sha256(written[0]))
            self.assertTrue((out / "adapter/adapter_config.json").exists())

        # Prometheus sees both successes (gauges refresh every few seconds).
        def metrics():
            with urllib.request.urlopen(f"http://127.0.0.1:{c.metrics_port}/metrics", timeout=5) as r:
                text = r.read().decode()
            return text if 'diablo_jobs{state="succeeded"} 2' in text else None
        text = c.wait_for(metrics, timeout=30, what="metrics to show two succeeded jobs")
        self.assertIn("diablo_workers_alive 2", text)
        self.assertIn('diablo_api_requests_total{code="OK",method="CreateJob"} 2', text)

    def test_a_killed_worker_s_job_resumes_from_its_checkpoint_on_the_other_worker(self):
        c = self.cluster
        c.start_scheduler()
        w1 = c.start_worker("w1")
        job_id = c.submit(self.job_file("long", 40, save_every=4))
        c.start_worker("w2")
        c.wait_for(lambda: any(int(e.get("checkpoint", {}).get("step", 0)) >= 4 for e in c.events(job_id)),
                   timeout=240, what="a checkpoint in storage")
        self.assertIn(c.list_workers()[0]["id"], c.job(job_id)["workers"], "the job started on w1")
        c.kill9(w1)
        c.wait_for(lambda: not trainer_pids(self.work / "worker-w1"), timeout=10,
                   what="w1's trainer to die with its agent")
        job = c.wait_state(job_id, "JOB_STATE_SUCCEEDED", timeout=400)
        self.assertEqual(job["attempts"], 2)

        events = c.events(job_id)
        resumed = [e for e in events if "state" in e and "resumed at step" in e["state"].get("reason", "")]
        self.assertEqual(len(resumed), 1, "attempt 2 says where it resumed")
        start = int(resumed[0]["state"]["reason"].rsplit(" ", 1)[1])
        self.assertGreaterEqual(start, 4)
        second = [int(e["step"]["step"]) for e in events if "step" in e and e.get("attempt") == 2]
        self.assertEqual(second[0], start + 1, "the step counter continues, it does not start over")
        self.assertEqual(second[-1], 40)
        lost = [e for e in events if "state" in e and "heartbeat" in e["state"].get("reason", "")]
        self.assertTrue(lost, "the requeue names the lost heartbeat")

    def test_a_stopped_worker_s_job_resumes_from_the_checkpoint_its_trainer_wrote_on_sigterm(self):
        c = self.cluster
        c.start_scheduler()
        w1 = c.start_worker("w1")
        job_id = c.submit(self.job_file("long", 40))  # no periodic checkpoints
        c.start_worker("w2")
        c.wait_for(lambda: int(c.job(job_id).get("step", 0)) >= 5, timeout=240, what="training to be under way")
        w1.send_signal(signal.SIGTERM)
        self.assertEqual(w1.wait(timeout=120), 0, "the worker exits cleanly after its trainer checkpointed")
        job = c.wait_state(job_id, "JOB_STATE_SUCCEEDED", timeout=400)
        events = c.events(job_id)
        reasons = [e["state"].get("reason", "") for e in events if "state" in e]
        self.assertEqual(job["attempts"], 2, reasons)
        self.assertTrue(any("w1 is shutting down" in r for r in reasons), reasons)
        resumed = [r for r in reasons if "resumed at step" in r]
        self.assertEqual(len(resumed), 1, f"attempt 2 resumed from the SIGTERM checkpoint: {reasons}")
        self.assertGreaterEqual(int(resumed[0].rsplit(" ", 1)[1]), 5)

    def test_a_killed_scheduler_restarts_with_nothing_lost_and_the_job_completes(self):
        c = self.cluster
        # The worker must check in within a lease timeout of the restart: keep
        # it well above scheduling noise on a busy test machine.
        c.lease_timeout = 15
        c.start_scheduler()
        c.start_worker("w1")
        job_id = c.submit(self.job_file("job", 24, save_every=6))
        c.wait_for(lambda: int(c.job(job_id).get("step", 0)) >= 3, timeout=240, what="training to be under way")
        port = c.port
        c.kill9(c.scheduler)
        time.sleep(1.5)  # the worker keeps training and buffers its reports
        c.start_scheduler(port=port)
        job = c.wait_state(job_id, "JOB_STATE_SUCCEEDED", timeout=300)
        events = c.events(job_id)
        reasons = [e["state"].get("reason") for e in events if "state" in e]
        self.assertEqual(job["attempts"], 1, f"the running attempt carried on through the restart: {reasons}")
        self.assertEqual([int(e["seq"]) for e in events], list(range(1, len(events) + 1)))
        steps = [int(e["step"]["step"]) for e in events if "step" in e]
        self.assertEqual(steps, list(range(1, 25)), "every step event arrived once, in order")

    def test_a_crashing_trainer_is_retried_then_failed_with_its_stderr(self):
        crash = self.work / "crash.sh"
        crash.write_text("#!/bin/sh\necho 'fatal: simulated illegal memory access in kernel' >&2\nkill -SEGV $$\n")
        crash.chmod(0o755)
        c = self.cluster
        c.start_scheduler()
        c.start_worker("w1", diablo=crash)
        job_id = c.submit(self.job_file("job", 4), "--max-retries", "1")
        job = c.wait_state(job_id, "JOB_STATE_FAILED", timeout=120)
        self.assertEqual(job["attempts"], 2)
        self.assertIn("signal 11", job["reason"])
        self.assertIn("no retries left", job["reason"])
        lines = [e["log"]["line"] for e in c.events(job_id) if "log" in e and e["log"].get("source") == "stderr"]
        self.assertEqual(lines.count("fatal: simulated illegal memory access in kernel"), 2)
        self.assertEqual(c.ctl("watch", job_id, check=False).returncode, 3, "watch exits 3 for a failed job")

    def test_cancel_stops_the_trainer_within_five_seconds(self):
        c = self.cluster
        c.start_scheduler()
        c.start_worker("w1")
        job_id = c.submit(self.job_file("job", 500))
        c.wait_for(lambda: int(c.job(job_id).get("step", 0)) >= 1, timeout=240, what="the first step")
        pids = trainer_pids(self.work / "worker-w1")
        self.assertEqual(len(pids), 1)
        started = time.time()
        c.ctl("cancel", job_id, "--reason", "test")
        while time.time() - started < 10 and Path(f"/proc/{pids[0]}").exists():
            status = Path(f"/proc/{pids[0]}/stat").read_text().split()[2] if Path(f"/proc/{pids[0]}").exists() else "X"
            if status == "Z":
                break
            time.sleep(0.05)
        elapsed = time.time() - started
        self.assertLess(elapsed, 5.0, f"the trainer was still there {elapsed:.1f}s after cancel")
        self.assertEqual(c.job(job_id)["state"], "JOB_STATE_CANCELLED")
        self.assertEqual(c.ctl("watch", job_id, check=False).returncode, 4)

    def test_a_two_node_job_runs_as_one_gang_across_two_workers(self):
        c = self.cluster
        c.start_scheduler()
        c.start_worker("w1")
        c.start_worker("w2")
        job_id = c.submit(self.job_file("gang", 4, save_every=2), "--nodes", "2")
        job = c.wait_state(job_id, "JOB_STATE_SUCCEEDED", timeout=400)
        self.assertEqual(len(job["workers"]), 2, "both nodes ran the attempt")
        self.assertEqual(job["attempts"], 1, f"one attempt: {job.get('reason')}")
        for name in ("w1", "w2"):
            configs = list(self.work.glob(f"worker-{name}/jobs/{job_id}-attempt-1-rank-*/config.json"))
            self.assertEqual(len(configs), 1, f"{name} ran one rank")
        steps = [int(e["step"]["step"]) for e in c.events(job_id) if "step" in e]
        self.assertEqual(steps, [1, 2, 3, 4])
        out = self.work / "gang-download"
        c.ctl("download", job_id, "--out", out)
        self.assertTrue((out / "adapter/adapter_model.safetensors").exists())

    def test_s3_storage_end_to_end(self):
        """The same job with the service's storage on an S3-protocol server
        (moto on loopback): uploads, checkpoints and the adapter go through S3."""
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(moto.wait)
        self.addCleanup(moto.terminate)
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "DIABLO_S3_ENDPOINT": f"http://127.0.0.1:{port}"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        self.addCleanup(lambda: [os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
                                 for k, v in saved.items()])
        import boto3
        s3 = boto3.client("s3", endpoint_url=env["DIABLO_S3_ENDPOINT"], region_name="us-east-1")
        self.cluster.wait_for(lambda: _try(lambda: s3.create_bucket(Bucket="diablo")), timeout=30,
                              what="moto to start")
        c = self.cluster
        c.extra_args += ["--storage", "s3://diablo/service"]
        c.start_scheduler()
        c.start_worker("w1")
        job_id = c.submit(self.job_file("s3job", 4, save_every=2))
        c.wait_state(job_id, "JOB_STATE_SUCCEEDED", timeout=300)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="diablo", Prefix="service/")["Contents"]]
        self.assertTrue(any(k.startswith("service/files/") for k in keys), keys)
        self.assertIn(f"service/jobs/{job_id}/checkpoints/latest", keys)
        self.assertTrue(any(k.endswith("/output/adapter/adapter_model.safetensors") for k in keys), keys)
        out = self.work / "s3-download"
        c.ctl("download", job_id, "--out", out)
        stored = next(k for k in keys if k.endswith("/output/adapter/adapter_model.safetensors"))
        body = s3.get_object(Bucket="diablo", Key=stored)["Body"].read()
        self.assertEqual(hashlib.sha256(body).hexdigest(), sha256(out / "adapter/adapter_model.safetensors"))

    def test_bad_input_gets_the_right_status_and_writes_nothing(self):
        c = self.cluster
        c.start_scheduler()
        c.start_worker("w1")
        good = self.job_file("good", 4)

        def submit_error(text, *args, token=None):
            path = self.work / "bad.yaml"
            path.write_text(text)
            out = c.ctl("submit", path, "--no-upload", *args, token=token, check=False)
            return out.returncode, out.stderr

        base = good.read_text()
        code, err = submit_error(base + "optimizer: {lr: 1}\n")
        self.assertEqual(code, 2, err)
        self.assertIn("optimizer", err)
        code, err = submit_error(base.replace("lr: 3.0e-3", "lr: -1"))
        self.assertEqual(code, 1, err)
        self.assertIn("optim.lr", err)
        missing = self.work / "nonexistent" / "model.gguf"
        code, err = submit_error(base.replace(str(MODEL), str(missing)))
        self.assertEqual(code, 1, err)
        self.assertIn(f"spec.model: {missing}: no such file", err)
        code, err = submit_error(base.replace(str(MODEL), "/etc/passwd"))
        self.assertEqual(code, 1, err)
        self.assertIn("spec.model: /etc/passwd: local paths must lie under a root the operator grants", err)
        broken = self.work / "broken.jsonl"
        broken.write_text('{"instruction": "x", "output": "y"}\n{oops\n')
        code, err = submit_error(base.replace(str(self.train), str(broken)))
        self.assertEqual(code, 1, err)
        self.assertIn("spec.data.train: line 2: not valid JSON", err)
        # Every line is checked at submit, not only the first MiB: 2 MB of good
        # records, then one without its "output".
        records, lines, size = self.train.read_text().splitlines(), [], 0
        while size < 2_200_000:
            lines.append(records[len(lines) % len(records)])
            size += len(lines[-1]) + 1
        far = self.work / "broken-far.jsonl"
        far.write_text("\n".join(lines) + '\n{"instruction": "x", "input": "y"}\n')
        self.assertGreater(far.stat().st_size, 2 << 20)
        code, err = submit_error(base.replace(str(self.train), str(far)))
        self.assertEqual(code, 1, err)
        self.assertIn(f'spec.data.train: line {len(lines) + 1}: missing field "output"', err)
        # Tokenised with the model's own tokenizer and template: no example fits
        # 16 tokens, and truncation: drop would skip them all.
        code, err = submit_error(base.replace("max_seq_len: 64", "max_seq_len: 16, truncation: drop"))
        self.assertEqual(code, 1, err)
        self.assertIn("spec.data.train: no example fits data.max_seq_len 16 after tokenisation", err)
        self.assertIn("set data.truncation: right", err)
        code, err = submit_error(base, token="dbl_not_a_real_token")
        self.assertEqual(code, 1, err)
        self.assertIn("unknown or revoked token", err)
        code, err = submit_error(base, token=c.worker_token)
        self.assertEqual(code, 1, err)
        self.assertIn("cannot call the job API", err)
        code, err = submit_error(base, "--devices", "4")
        self.assertEqual(code, 1, err)
        self.assertIn("no registered worker can run this job", err)
        self.assertEqual(c.ctl_json("list").get("jobs", []), [], "rejected submits left no job behind")

        # An oversized message is refused by the transport limit (8 MiB).
        import grpc
        channel = grpc.insecure_channel(c.address)
        create = channel.unary_unary("/diablo.v1.JobService/CreateJob")
        name = b"x" * (9 << 20)
        length, varint = len(name), b""
        while True:
            byte, length = length & 0x7F, length >> 7
            varint += bytes([byte | (0x80 if length else 0)])
            if not length:
                break
        with self.assertRaises(grpc.RpcError) as raised:
            create(b"\x12" + varint + name, timeout=30,
                   metadata=[("authorization", f"Bearer {c.user_token}")])
        self.assertEqual(raised.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)

        # Another tenant's job does not exist for you.
        job_id = c.submit(good)
        other = c.token("tenant-b", "user")
        out = c.ctl("get", job_id, token=other, check=False)
        self.assertEqual(out.returncode, 1)
        self.assertIn("not found", out.stderr)


class TlsTest(unittest.TestCase):
    """TLS and mutual TLS: the scheduler serves with a certificate; clients
    that trust its CA connect, others cannot; with a client CA, a client
    without a certificate is refused."""

    def setUp(self):
        self.cluster = None
        self.dir = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip())
        d = self.dir

        def openssl(*args):
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=diablo-test-ca",
                "-keyout", "ca.key", "-out", "ca.pem")
        for name, cn in (("server", "localhost"), ("client", "diablo-worker")):
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
                    "-out", f"{name}.csr")
            ext = d / f"{name}.ext"
            ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                    "-days", "1", "-out", f"{name}.pem", "-extfile", ext.name)

    def tearDown(self):
        if self.cluster:
            self.cluster.stop()
        subprocess.run(["rm", "-rf", str(self.dir)])

    def version(self, *tls):
        env = dict(os.environ, DIABLO_SERVER=self.cluster.address)
        return subprocess.run([Path(BIN) / "diablo-ctl", "--timeout", "5", *tls, "version"], capture_output=True,
                              text=True, env=env)

    def test_tls_and_mutual_tls(self):
        d = self.dir
        self.cluster = Cluster(BIN, extra_args=["--tls-cert", d / "server.pem", "--tls-key", d / "server.key",
                                                "--tls-client-ca", d / "ca.pem"])
        self.cluster.start_scheduler()
        ok = self.version("--tls-ca", d / "ca.pem", "--tls-cert", d / "client.pem", "--tls-key", d / "client.key")
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertIn("server: diablo-scheduler", ok.stdout)
        self.assertNotEqual(self.version("--tls-ca", d / "ca.pem").returncode, 0, "no client certificate")
        self.assertNotEqual(self.version().returncode, 0, "plaintext to a TLS port")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--model", default="")
    args, rest = parser.parse_known_args()
    BIN, MODEL = args.bin, args.model
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
