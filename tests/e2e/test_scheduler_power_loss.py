#!/usr/bin/env python3
"""Power loss under SQLite: kill -9 the scheduler in a loop while clients submit.

Usage: test_scheduler_power_loss.py --bin BUILD/bin [unittest args]

Four client threads submit jobs through the Python SDK, each with its own
idempotency key and retrying through the outage with that same key, while
the scheduler is killed with SIGKILL and restarted five times.  After every
restart each job whose submit was acknowledged (a job id came back) must be
there, and no key may have made two jobs.  The model is a config.json (the
scheduler reads only its shape) and no worker runs, so nothing trains:
only the store is under test.
"""

import json
import sys
import threading
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "client" / "python"))

from cluster import TINY_CONFIG as CONFIG, Cluster, add_api_stubs_to_path, take_bin_arg  # noqa: E402

BIN = take_bin_arg()
add_api_stubs_to_path()
from diablo_client import Client, DiabloError  # noqa: E402
KILLS = 5
CLIENTS = 4


class PowerLossTest(unittest.TestCase):
    def setUp(self):
        if not (Path(BIN) / "diablo-scheduler").exists():
            self.skipTest(f"no diablo-scheduler in {BIN}")
        # The submitters retry as fast as they can: no rate limit or queue cap in the way.
        self.cluster = Cluster(BIN, lease_timeout=30, extra_args=["--rate-limit", "1e6", "--rate-burst", "1e6",
                                                                "--max-queued-jobs", "1000000"])
        self.addCleanup(self.cluster.stop)
        work = self.cluster.work
        (work / "model").mkdir()
        (work / "model" / "config.json").write_text(json.dumps(CONFIG))
        (work / "train.jsonl").write_text('{"instruction": "hi", "output": "hello"}\n')
        self.spec = {"model": str(work / "model"), "method": {"name": "diablo", "blocks": 4},
                     "data": {"train": str(work / "train.jsonl")}, "optim": {"max_steps": 1}}
        self.acknowledged = {}  # idempotency key -> job id
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def submitter(self, client_index):
        client = Client(self.cluster.address, token=self.cluster.user_token, timeout=5, retries=0)
        n = 0
        while not self.stopping.is_set():
            key = f"client{client_index}-job{n}"
            while not self.stopping.is_set():  # the same key until it is acknowledged
                try:
                    job = client.submit(self.spec, name=key, idempotency_key=key, queue_anyway=True,
                                        upload_local=False)
                except DiabloError:
                    time.sleep(0.05)  # the scheduler is down or restarting
                    continue
                with self.lock:
                    self.acknowledged[key] = job.id
                n += 1
                break

    def check_everything_acknowledged_is_there(self, round_):
        # What was acknowledged before the listing starts must be in it
        # (submits go on meanwhile, so the copy comes first).
        with self.lock:
            acknowledged = dict(self.acknowledged)
        client = Client(self.cluster.address, token=self.cluster.user_token, timeout=30)
        jobs = client.list(page_size=500)  # every page
        by_name = {}
        for job in jobs:
            by_name.setdefault(job.name, []).append(job.id)
        for key, job_id in acknowledged.items():
            self.assertIn(job_id, by_name.get(key, []), f"round {round_}: acknowledged job {key} ({job_id}) lost")
        for name, ids in by_name.items():
            self.assertEqual(len(ids), 1, f"round {round_}: key {name} made {len(ids)} jobs: {ids}")
        return len(acknowledged)

    def test_every_acknowledged_job_survives_kill_9_and_none_is_made_twice(self):
        c = self.cluster
        c.start_scheduler()
        port = c.port
        threads = [threading.Thread(target=self.submitter, args=(i,), daemon=True) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        counts = []
        try:
            for round_ in range(KILLS):
                time.sleep(1.5)  # submits in flight when the power goes
                c.kill9(c.scheduler)
                time.sleep(0.3)
                c.start_scheduler(port=port)
                counts.append(self.check_everything_acknowledged_is_there(round_))
        finally:
            self.stopping.set()
            for t in threads:
                t.join(timeout=30)
        print(f"jobs acknowledged after each of {KILLS} kill -9 restarts: {counts}", file=sys.stderr)
        self.assertGreater(counts[-1], counts[0], f"submits kept being acknowledged across restarts: {counts}")
        self.check_everything_acknowledged_is_there("final")


if __name__ == "__main__":
    unittest.main()
