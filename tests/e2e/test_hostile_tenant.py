#!/usr/bin/env python3
"""A hostile second tenant against a real scheduler and worker on loopback.

Usage: test_hostile_tenant.py --bin BUILD/bin [unittest args]

Tenant alpha runs a job on a real diablo-worker (its trainer a stand-in that
reports `started` and waits) and has an uploaded file; an adapter of alpha's
lies in the service's storage.  Tenant beta, whose grants name only its own
folder, then submits with every input field naming alpha's adapter in every
spelling (absolute path, file://, `..` out of its folder, a symlink in its
folder, percent-encoding, s3://, alpha's upload id): each submit is refused
and makes no job.  Beta then looks for alpha everywhere it can: job listing,
get, logs, download, the fleet listing, uploads, and the metrics.  Alpha's
ids and names appear nowhere.
"""

import base64
import json
import os
import sys
import unittest
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cluster import take_bin_arg, tiny_cluster, write_tiny_job  # noqa: E402

BIN = take_bin_arg()

FIELDS = ("model", "data.train", "data.eval", "init_adapter")
ALPHA_JOB_NAME = "alpha-confidential-run"


class HostileTenantTest(unittest.TestCase):
    def setUp(self):
        c = tiny_cluster(self, BIN)
        # Beta may read its own folder in place, nothing else.
        self.beta_dir = c.work / "beta-data"
        self.beta_dir.mkdir()
        self.beta_job = write_tiny_job(self.beta_dir)  # beta's own model and data
        grants = json.loads(c.grants.read_text())
        grants["tenants"]["tenant-b"] = {"local_roots": [str(self.beta_dir)]}
        c.grants.write_text(json.dumps(grants))
        self.beta = c.token("tenant-b", "user")
        # /metrics is the operator's: it takes its own token.
        self.metrics_token = "metrics-" + os.urandom(8).hex()
        (c.work / "metrics-token").write_text(self.metrics_token + "\n")
        c.extra_args += ["--metrics-token-file", str(c.work / "metrics-token")]
        c.start_scheduler()

    def beta_ctl(self, *args):
        return self.cluster.ctl(*args, token=self.beta, check=False)

    def test_beta_cannot_name_read_or_see_anything_of_alpha(self):
        c = self.cluster
        c.start_worker("w1", diablo=self.trainer)
        alpha_job = c.submit(self.job, "--no-upload", "--name", ALPHA_JOB_NAME)
        c.wait_state(alpha_job, "JOB_STATE_RUNNING", timeout=60)
        uploaded = c.ctl_json("files", "upload", c.work / "train.jsonl", "--name", "alpha-data.jsonl")
        alpha_file = uploaded["id"]
        self.assertEqual(uploaded["uri"], f"upload://{alpha_file}")

        # An adapter of alpha's where the service keeps job outputs.
        storage = c.data_dir / "storage"
        adapter_dir = storage / "jobs" / alpha_job / "attempts" / "1" / "output" / "adapter"
        adapter_dir.mkdir(parents=True, exist_ok=True)
        (adapter_dir / "adapter_model.safetensors").write_bytes(b"alpha's weights")
        target = str(adapter_dir)
        (self.beta_dir / "link").symlink_to(storage)
        spellings = {
            "absolute path": target,
            "file:// URI": "file://" + target,
            "'..' out of beta's folder": str(self.beta_dir / ".." / os.path.relpath(target, c.work)),
            "symlink in beta's folder": str(self.beta_dir / "link" / os.path.relpath(target, storage)),
            "percent-encoded": "file://" + target.replace("/jobs/", "/%6Aobs/"),
            "s3:// URI": f"s3://diablo/jobs/{alpha_job}/attempts/1/output/adapter",
            "alpha's upload": f"upload://{alpha_file}",
        }
        for field in FIELDS:
            for how, value in spellings.items():
                with self.subTest(field=field, spelling=how):
                    out = self.beta_ctl("submit", self.beta_job, "--no-upload", "--queue-anyway",
                                        "--set", f"{field}={value}")
                    self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
                    self.assertIn(f"spec.{field}", out.stderr)
                    self.assertNotIn("alpha's weights", out.stdout + out.stderr)
        listed = json.loads(self.beta_ctl("-o", "json", "list").stdout or "{}")
        self.assertEqual(listed.get("jobs", []), [], "no refused submit made a job")
        # The same submit naming beta's own files is accepted: the refusals were the inputs'.
        own = self.beta_ctl("submit", self.beta_job, "--no-upload", "--queue-anyway", "--name", "beta-own")
        self.assertEqual(own.returncode, 0, own.stderr)

        # Alpha's job and file do not exist for beta, under any verb.
        for verb in (("get", alpha_job), ("logs", alpha_job), ("watch", alpha_job), ("cancel", alpha_job),
                     ("download", alpha_job, "--out", c.work / "beta-download"), ("files", "rm", alpha_file)):
            with self.subTest(verb=verb[0]):
                out = self.beta_ctl(*verb)
                self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
                self.assertIn("not found", (out.stdout + out.stderr).lower())
        self.assertFalse((c.work / "beta-download").exists() and any((c.work / "beta-download").iterdir()))
        self.assertEqual(c.job(alpha_job)["state"], "JOB_STATE_RUNNING", "beta's cancel did nothing")

        # Listings name nothing of alpha's: the fleet shows its job only as capacity in use.
        seen = ""
        for args in (("-o", "json", "workers"), ("workers",), ("-o", "json", "files", "list"), ("list",)):
            out = self.beta_ctl(*args)
            self.assertEqual(out.returncode, 0, out.stderr)
            seen += out.stdout + out.stderr
        workers = json.loads(self.beta_ctl("-o", "json", "workers").stdout)["workers"]
        self.assertEqual(sum(w.get("otherJobs", w.get("other_jobs", 0)) for w in workers), 1)
        for secret in (alpha_job, alpha_file, ALPHA_JOB_NAME, "alpha-data.jsonl"):
            self.assertNotIn(secret, seen, f"beta saw {secret}")

        # The metrics label series by job id for the operator: beta's token
        # does not open them, and job names are not labels by default.
        url = f"http://127.0.0.1:{c.metrics_port}/metrics"
        for password in (None, self.beta):
            with self.subTest(metrics_password="none" if password is None else "beta's token"):
                request = urllib.request.Request(url)
                if password is not None:
                    request.add_header("Authorization", "Basic " + base64.b64encode(
                        f"beta:{password}".encode()).decode())
                with self.assertRaises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(request, timeout=5)
                self.assertEqual(refused.exception.code, 401)
        request = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(
            f"prometheus:{self.metrics_token}".encode()).decode()})

        def operator_view():
            with urllib.request.urlopen(request, timeout=5) as r:
                text = r.read().decode()
            return text if alpha_job in text else None
        metrics = c.wait_for(operator_view, timeout=30, what="the running job in the operator's metrics")
        self.assertNotIn(ALPHA_JOB_NAME, metrics, "job names are not labels unless the operator opts in")


if __name__ == "__main__":
    unittest.main(verbosity=2)
