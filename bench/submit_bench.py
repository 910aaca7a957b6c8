#!/usr/bin/env python3
"""Control-plane benchmark: job submit throughput and submit→RUNNING latency.

Starts real diablo-scheduler processes on loopback (tests/e2e/cluster.py,
rate limits and queue caps lifted) and drives them through the Python SDK
(client/python/diablo_client).  Three measurements:

  (a) submit throughput: --jobs CreateJob calls from --concurrency client
      threads on one channel, queue_anyway=True, no worker registered (the
      jobs stay queued).  Reports jobs/s and the per-call latency under that
      load, plus the unloaded CreateJob latency (one call at a time).
  (b) submit→RUNNING latency: a fresh scheduler with --workers CPU workers
      whose trainer is a fake `diablo` (a shell script that prints the
      "started" and "finished" events, writes a dummy adapter and exits 0).
      A short calibration burst measures how many jobs/s the fleet completes;
      then --jobs jobs are submitted at a steady rate below that (--rate, by
      default --load x the calibrated capacity) so that the latency is the
      control plane's, not a queue's.  Latency of a job = time of its
      JobEvent state change to JOB_STATE_RUNNING (the scheduler's clock) -
      the client's time.time() just before its CreateJob call (same host).
  (c) the same with --burst-jobs jobs (default min(200, --jobs)) submitted
      all at once: queue-inclusive latency, which grows with N / capacity.

Baseline, measured on the same channel in the same run: the latency of a
no-op unary RPC (SystemService.GetVersion), and the ratios of the figures
above to it.

Usage (the test venv's Python has grpcio, grpcio-tools and PyYAML):

    ~/.cache/diablo/venv/bin/python bench/submit_bench.py \\
        --bin build/bin --model ~/.cache/diablo/models/SmolLM2-135M-Instruct.Q4_1.gguf
    ... --jobs 50            # a quick smoke run
"""

import argparse
import concurrent.futures
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "service"))
sys.path.insert(0, str(ROOT / "client" / "python"))

import cluster  # noqa: E402

FAKE_DIABLO = r"""#!/bin/sh
# A stand-in for `diablo train CONFIG --events` (argv: train CONFIG --events
# [--resume]): reports a one-step run at once, the way the real trainer's
# event stream does, and leaves an adapter file for the agent to upload.
config="$2"
out=$(sed -n 's/^ *"output_dir": *"\(.*\)",\{0,1\} *$/\1/p' "$config")
if [ -z "$out" ]; then echo "fake diablo: no output_dir in $config" >&2; exit 2; fi
printf '{"event":"started","time":%s,"total_steps":1,"start_step":0}\n' "$(date +%s.%N)"
mkdir -p "$out/adapter" && printf 'not a real adapter\n' > "$out/adapter/adapter_model.safetensors" || exit 3
printf '{"event":"finished","time":%s,"step":1}\n' "$(date +%s.%N)"
exit 0
"""

SCHEDULER_ARGS = ["--rate-limit", "1000000", "--rate-burst", "1000000", "--max-queued-jobs", "1000000"]


def percentile(values, q):
    """q-th percentile (0..100), linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values):
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "mean": statistics.fmean(values) if values else None, "max": max(values) if values else None}


def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def timed_calls(fn, count):
    """Latencies (s) of count sequential calls of fn()."""
    out = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def machine():
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cores": affinity, "cpu_count": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version()}


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.TemporaryDirectory(prefix="diablo-submit-bench-")
        self.work = Path(self.tmp.name)
        data = self.work / "data"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_data.py"), str(data), "64"], check=True,
                       stdout=subprocess.DEVNULL)
        # Plain absolute paths: the scheduler reads the model's header for its
        # estimate and the first records of the data; nothing is uploaded.
        self.spec = {"model": str(Path(args.model).resolve()), "method": {"name": "diablo", "blocks": 32},
                     "data": {"train": str(data / "train.jsonl"), "max_seq_len": 64},
                     "optim": {"max_steps": 1, "global_batch": 4, "lr": 3e-3}, "threads": 1}
        self.fake = self.work / "fake-diablo"
        self.fake.write_text(FAKE_DIABLO)
        self.fake.chmod(0o755)
        self.results = {"machine": machine(), "config": {k: v for k, v in vars(args).items()}}

    def cluster(self, name):
        c = cluster.Cluster(self.args.bin, work=self.work / name, extra_args=SCHEDULER_ARGS,
                            input_roots=[Path(self.args.model).resolve().parent, self.work])
        c.start_scheduler()
        return c

    def client(self, c):
        from diablo_client import Client
        return Client(c.address, token=c.user_token, timeout=60)

    def submit(self, client, key, **kwargs):
        return client.submit(self.spec, name=key, upload_local=False, idempotency_key=key, **kwargs)

    def baseline(self, client, label):
        for _ in range(50):
            client.version()  # warm-up: connection, server threads
        lat = timed_calls(client.version, self.args.version_calls)
        self.results[f"getversion_{label}"] = summary(lat)
        return self.results[f"getversion_{label}"]

    # ---- (a)

    def throughput(self):
        a = self.args
        c = self.cluster("throughput")
        try:
            client = self.client(c)
            self.baseline(client, "a")
            for i in range(5):
                self.submit(client, f"warm-{i}", queue_anyway=True)
            seq = timed_calls(lambda it=iter(range(10 ** 9)): self.submit(client, f"seq-{next(it)}", queue_anyway=True),
                              min(a.sequential, a.jobs))
            self.results["create_sequential"] = summary(seq)

            latencies, errors = [], []
            lock = threading.Lock()
            counter = iter(range(a.jobs))

            def loop():
                mine = []
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        break
                    start = time.perf_counter()
                    try:
                        self.submit(client, f"tp-{i}", queue_anyway=True)
                    except Exception as e:  # counted, reported
                        with lock:
                            errors.append(repr(e))
                        continue
                    mine.append(time.perf_counter() - start)
                with lock:
                    latencies.extend(mine)

            threads = [threading.Thread(target=loop) for _ in range(a.concurrency)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
            queued = sum(1 for _ in client.iter_jobs(states=["queued"], page_size=500))
            self.results["create_concurrent"] = {**summary(latencies), "wall_s": wall, "errors": len(errors),
                                                 "first_errors": errors[:3], "jobs_per_s": len(latencies) / wall,
                                                 "queued_after": queued}
            client.close()
        finally:
            c.stop()

    # ---- (b), (c)

    def wait_all_final(self, client, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not next(iter(client.iter_jobs(states=["queued", "assigned", "running"], page_size=1)), None):
                return
            time.sleep(0.2)
        raise RuntimeError(f"jobs still not final after {timeout}s")

    def running_times(self, client, ids):
        """{job id: (ASSIGNED time, RUNNING time, trainer's time, final state)} from each job's event log."""

        def one(job_id):
            assigned = running = trainer = final = None
            for event in client.watch(job_id, follow=False):
                kind = event.WhichOneof("kind")
                if kind == "state":
                    if event.state.to == 2 and assigned is None:
                        assigned = event.time
                    elif event.state.to == 3 and running is None:
                        running = event.time
                    elif event.state.to >= 4:
                        final = event.state.to
                elif kind == "log" and event.log.line.startswith("finished at step") and trainer is None:
                    trainer = event.time  # the fake trainer's own clock, a few ms after it started
            return job_id, (assigned, running, trainer, final)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return dict(pool.map(one, ids))

    def run_jobs(self, client, count, rate, prefix):
        """Submits count jobs (at rate/s, or all at once when rate is None); returns latency figures."""
        submitted = {}
        lock = threading.Lock()
        start = time.time()

        def one(i):
            if rate:
                delay = start + i / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            key = f"{prefix}-{i}"
            t = time.time()
            job = self.submit(client, key)
            with lock:
                submitted[job.id] = t

        with concurrent.futures.ThreadPoolExecutor(self.args.concurrency) as pool:
            list(pool.map(one, range(count)))
        submit_wall = time.time() - start
        self.wait_all_final(client, timeout=max(120, 10 * count))
        done_wall = time.time() - start
        times = self.running_times(client, list(submitted))
        to_running, to_assigned, to_trainer, trainer_to_running, failed = [], [], [], [], 0
        for job_id, t0 in submitted.items():
            assigned, running, trainer, final = times[job_id]
            if final != 4 or running is None:
                failed += 1
                continue
            to_running.append(running - t0)
            if assigned is not None:
                to_assigned.append(assigned - t0)
                if trainer is not None:
                    to_trainer.append(trainer - assigned)
                    trainer_to_running.append(running - trainer)
        return {"jobs": count, "rate": rate, "submit_wall_s": submit_wall, "done_wall_s": done_wall,
                "completed_per_s": (count - failed) / done_wall, "not_succeeded": failed,
                "submit_to_running": summary(to_running), "submit_to_assigned": summary(to_assigned),
                "assigned_to_trainer": summary(to_trainer), "trainer_to_running": summary(trainer_to_running)}

    def latency(self):
        a = self.args
        c = self.cluster("latency")
        try:
            for w in range(a.workers):
                c.start_worker(f"w{w}", diablo=str(self.fake))
            client = self.client(c)
            self.baseline(client, "b")
            # Calibration: what the fleet completes when it never waits for work.
            calib = self.run_jobs(client, max(8 * a.workers, 16), None, "calib")
            capacity = calib["completed_per_s"]
            self.results["calibration"] = calib
            rate = a.rate or max(0.5, a.load * capacity)
            self.results["steady"] = self.run_jobs(client, a.jobs, rate, "steady")
            burst = min(200, a.jobs) if a.burst_jobs is None else a.burst_jobs
            if burst:
                self.results["burst"] = self.run_jobs(client, burst, None, "burst")
            client.close()
        finally:
            c.stop()

    # ---- report

    def report(self):
        r = self.results
        m = r["machine"]
        gv_a, gv_b = r.get("getversion_a"), r.get("getversion_b")
        lines = [f"diablo submit benchmark — {m['cores']} cores ({m['cpu'] or 'unknown CPU'}), Linux {m['kernel']}, "
                 f"Python {m['python']}, loopback, SQLite scheduler"]
        rows = []

        def row(what, n, p50, p99, extra="", base=None):
            ratio = "-" if base is None or p50 is None else f"{p50 / base['p50']:.1f}x"
            rows.append((what, str(n), ms(p50), ms(p99), ratio, extra))

        if gv_a:
            row("GetVersion (no-op), scheduler A", gv_a["n"], gv_a["p50"], gv_a["p99"], "", gv_a)
            s = r["create_sequential"]
            row("CreateJob, 1 at a time", s["n"], s["p50"], s["p99"], "", gv_a)
            cc = r["create_concurrent"]
            row(f"CreateJob, {self.args.concurrency} threads", cc["n"], cc["p50"], cc["p99"],
                f"{cc['jobs_per_s']:.0f} jobs/s ({cc['errors']} errors)", gv_a)
        if gv_b:
            row(f"GetVersion (no-op), scheduler B (+{self.args.workers} workers)", gv_b["n"], gv_b["p50"],
                gv_b["p99"], "", gv_b)
            cal = r["calibration"]
            row("fleet capacity (calibration burst)", cal["jobs"], None, None,
                f"{cal['completed_per_s']:.1f} jobs/s completed")
            for key, label in (("steady", "submit→RUNNING, steady {rate:.1f}/s"), ("burst", "submit→RUNNING, all at once")):
                if key not in r:
                    continue
                x = r[key]
                s = x["submit_to_running"]
                row(label.format(rate=x["rate"] or 0), s["n"], s["p50"], s["p99"],
                    f"{x['not_succeeded']} not succeeded; {x['completed_per_s']:.1f} jobs/s", gv_b)
                for part, text in (("submit_to_assigned", "submit→ASSIGNED (leased)"),
                                   ("assigned_to_trainer", "ASSIGNED→trainer printed its events"),
                                   ("trainer_to_running", "trainer's \"started\"→RUNNING recorded")):
                    row(f"  of which {text}", x[part]["n"], x[part]["p50"], x[part]["p99"])
        widths = [max(len(str(x[i])) for x in rows + [("", "n", "p50", "p99", "p50/GetVersion", "")]) for i in range(6)]
        header = ("", "n", "p50", "p99", "p50/GetVersion", "")
        fmt = lambda x: "  ".join(str(v).ljust(widths[i]) if i in (0, 5) else str(v).rjust(widths[i])  # noqa: E731
                                  for i, v in enumerate(x)).rstrip()
        lines.append(fmt(header))
        lines += [fmt(x) for x in rows]
        if "create_concurrent" in r:
            cc = r["create_concurrent"]
            lines.append(f"throughput: {cc['n']} CreateJob in {cc['wall_s']:.2f} s from {self.args.concurrency} "
                         f"threads = {cc['jobs_per_s']:.0f} jobs/s; {cc['queued_after']} jobs queued at the end")
        return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--bin", default=str(ROOT / "build" / "bin"), help="directory of the diablo binaries")
    p.add_argument("--model", default=str(Path.home() / ".cache/diablo/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
                   help="a GGUF model (the scheduler reads its header for the memory estimate)")
    p.add_argument("--jobs", type=int, default=1000, help="jobs for (a) and for (b) (default 1000)")
    p.add_argument("--concurrency", type=int, default=8, help="client threads submitting (default 8)")
    p.add_argument("--workers", type=int, default=4, help="fake-trainer workers for (b) (default 4)")
    p.add_argument("--rate", type=float, default=0, help="(b) submit rate, jobs/s (default: --load x capacity)")
    p.add_argument("--load", type=float, default=0.5, help="(b) fraction of the calibrated capacity (default 0.5)")
    p.add_argument("--burst-jobs", type=int, default=None,
                   help="(c) also submit this many at once (default: min(200, --jobs); 0 skips it)")
    p.add_argument("--sequential", type=int, default=200, help="unloaded CreateJob calls, one at a time (default 200)")
    p.add_argument("--version-calls", type=int, default=1000, help="GetVersion calls for the baseline (default 1000)")
    p.add_argument("--only", choices=["throughput", "latency"], help="run one part only")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args()
    if not Path(args.model).is_file():
        sys.exit(f"submit_bench: no model at {args.model} (pass --model)")
    if not (Path(args.bin) / "diablo-scheduler").exists():
        sys.exit(f"submit_bench: no diablo-scheduler in {args.bin} (pass --bin)")
    bench = Bench(args)
    try:
        if args.only in (None, "throughput"):
            print(f"(a) {args.jobs} CreateJob from {args.concurrency} threads ...", file=sys.stderr, flush=True)
            bench.throughput()
        if args.only in (None, "latency"):
            print(f"(b) {args.jobs} jobs on {args.workers} fake-trainer workers ...", file=sys.stderr, flush=True)
            bench.latency()
        print(bench.report())
        if args.json:
            Path(args.json).write_text(json.dumps(bench.results, indent=2) + "\n")
    finally:
        bench.tmp.cleanup()


if __name__ == "__main__":
    main()
