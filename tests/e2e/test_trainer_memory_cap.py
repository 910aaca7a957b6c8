#!/usr/bin/env python3
"""A worker's trainer memory cap with real processes on loopback.

Usage: test_trainer_memory_cap.py --bin BUILD/bin [unittest args]

A real diablo-scheduler and one CPU diablo-worker started with
`--trainer-memory-cap 1GiB` run the real `diablo train` on a small random
Llama.  A job whose activations need well over 1 GiB (8 sequences of 2048
tokens per micro-batch) runs out of memory inside its trainer: the job fails
with the trainer's `out_of_memory` error, spends none of its retries, and its
reason names the worker's cap.  The worker lives on and runs the next job, the
same model on short sequences, to success under the same cap.
"""

import json
import random
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cluster import Cluster, take_bin_arg, write_tiny_llama  # noqa: E402

BIN = take_bin_arg()


def write_dataset(path, records, length):
    """Alpaca records whose responses are `length` bytes (one token each with the byte tokenizer)."""
    rng = random.Random(7)
    with open(path, "w") as f:
        for i in range(records):
            f.write(json.dumps({"instruction": f"repeat {i}",
                                "output": "".join(rng.choice("abcdefgh ") for _ in range(length))}) + "\n")
    return path


class TrainerMemoryCapTest(unittest.TestCase):
    def setUp(self):
        for binary in ("diablo-worker", "diablo"):
            if not (Path(BIN) / binary).exists():
                self.skipTest(f"no {binary} in {BIN}")
        self.cluster = Cluster(BIN, heartbeat=0.3, lease_timeout=3.0)
        self.addCleanup(self.cluster.stop)
        work = self.cluster.work
        # About 4M parameters: a step on short sequences takes a second.
        self.model = write_tiny_llama(work / "model", hidden=256, intermediate=1024, layers=4, heads=4, kv_heads=2)
        self.long_data = write_dataset(work / "long.jsonl", 8, 2100)
        self.short_data = write_dataset(work / "short.jsonl", 8, 40)

    def job_file(self, name, train, max_seq_len, batch):
        path = self.cluster.work / f"{name}.yaml"
        path.write_text(f"model: {self.model}\n"
                        "method: {name: diablo, blocks: 4}\n"
                        f"data: {{train: {train}, max_seq_len: {max_seq_len}}}\n"
                        f"optim: {{max_steps: 2, global_batch: {batch}, lr: 1.0e-3}}\n"
                        "threads: 1\n")
        return path

    def logs(self, job_id):
        return [e["log"]["line"] for e in self.cluster.events(job_id) if "log" in e]

    def test_a_job_beyond_the_cap_fails_with_out_of_memory_and_the_worker_runs_the_next(self):
        c = self.cluster
        c.start_scheduler()
        worker = c.start_worker("capped", extra=["--trainer-memory-cap", "1GiB"])

        # Its estimate alone is 1.5 GiB of activations (diablo estimate --seq-len 2048 --micro-batch 8).
        oversized = c.submit(self.job_file("oversized", self.long_data, 2048, 8), "--no-upload",
                             "--max-retries", "2")
        job = c.wait_state(oversized, "JOB_STATE_FAILED", timeout=180)
        logs = self.logs(oversized)
        self.assertEqual(job["attempts"], 1,
                         f"out_of_memory is permanent: no retry is spent on it: {job.get('reason')}\n" + "\n".join(logs))
        self.assertIn("out_of_memory", job["reason"])
        self.assertIn("memory cap 1.0 GiB (--trainer-memory-cap)", job["reason"],
                      "the owner learns that the worker drew the line")
        self.assertTrue(any(line.startswith("error (out_of_memory)") for line in logs),
                        "the trainer's own error event, not a kill:\n" + "\n".join(logs))
        self.assertTrue(any("memory cap 1.0 GiB (--trainer-memory-cap)" in line for line in logs),
                        "the attempt's log says which cap the trainer ran under:\n" + "\n".join(logs))

        self.assertIsNone(worker.poll(), "the worker survived its trainer running out of memory")
        small = c.submit(self.job_file("small", self.short_data, 64, 4), "--no-upload")
        job = c.wait_state(small, "JOB_STATE_SUCCEEDED", timeout=180)
        self.assertEqual(job["attempts"], 1)
        self.assertIn("memory cap 1.0 GiB (--trainer-memory-cap)", (c.work / "capped.log").read_text(),
                      "the worker's own log names the cap of each attempt")


if __name__ == "__main__":
    unittest.main(verbosity=2)
