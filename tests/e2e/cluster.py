"""A real diablo service on loopback for the service tests: a scheduler on a
free port, tokens, any number of CPU workers, and helpers to drive
diablo-ctl, read job state and events, and kill processes the hard way."""

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def take_bin_arg():
    """Takes `--bin BUILD/bin` off the command line, leaving the rest to unittest; returns it."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--bin", default=str(ROOT / "build" / "bin"))
    args, rest = parser.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    return args.bin


_STUBS = None


def add_api_stubs_to_path():
    """Generates the API's Python modules (diablo.v1.*_pb2) into a temporary folder on sys.path."""
    global _STUBS
    if _STUBS is None:
        _STUBS = tempfile.TemporaryDirectory(prefix="diablo-pystubs-")
        subprocess.run([sys.executable, str(ROOT / "client" / "python" / "generate.py"), _STUBS.name],
                       check=True, stdout=subprocess.DEVNULL)
        sys.path.insert(0, _STUBS.name)


class Cluster:
    def __init__(self, bin_dir, work=None, heartbeat=0.5, lease_timeout=4.0, stall_timeout=120.0, extra_args=(),
                 input_roots=()):
        self.bin = Path(bin_dir)
        self._tmp = None
        if work is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="diablo-service-")
            work = self._tmp.name
        self.work = Path(work)
        self.data_dir = self.work / "scheduler"
        self.heartbeat = heartbeat
        self.lease_timeout = lease_timeout
        self.stall_timeout = stall_timeout
        self.extra_args = list(extra_args)
        self.rendezvous_base = random.randrange(20000, 60000, 1000)
        self.scheduler = None
        self.workers = {}
        self.port = None
        self.metrics_port = None
        self.user_token = self.token("tenant-a", "user")
        self.worker_token = self.token("ops", "worker")
        # What tenant-a's jobs may read in place besides uploads: the test's
        # own folder and `input_roots` (the scheduler protects its data dir
        # inside it whatever this grants).
        self.grants = self.work / "input-grants.json"
        roots = [str(self.work), *(str(Path(r).resolve()) for r in input_roots)]
        self.grants.write_text(json.dumps({"tenants": {"tenant-a": {"local_roots": roots}}}))

    # ---- processes

    def token(self, tenant, role):
        out = subprocess.run([self.bin / "diablo-scheduler", "--data-dir", self.data_dir, "token", "create",
                              "--tenant", tenant, "--role", role], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def start_scheduler(self, port=0):
        log_path = self.work / "scheduler.log"
        seen = log_path.read_text().count("listening on port") if log_path.exists() else 0
        with open(self.work / "scheduler.log", "a") as log:
            self.scheduler = subprocess.Popen(
                [self.bin / "diablo-scheduler", "--data-dir", self.data_dir, "--listen", f"127.0.0.1:{port}",
                 "--metrics-listen", "127.0.0.1:0", "--heartbeat-interval", str(self.heartbeat),
                 "--lease-timeout", str(self.lease_timeout), "--stall-timeout", str(self.stall_timeout),
                 # Tests may run side by side: keep their gangs' rendezvous ports apart.
                 "--rendezvous-port-base", str(self.rendezvous_base), "--input-grants", self.grants,
                 *self.extra_args],
                stderr=log, stdout=log)
        deadline = time.time() + 30
        while time.time() < deadline:
            text = (self.work / "scheduler.log").read_text()
            ports = re.findall(r"listening on port (\d+)", text)
            if len(ports) > seen and self.scheduler.poll() is None:
                self.port = int(ports[-1])
                metrics = re.findall(r"metrics on port (\d+)", text)
                self.metrics_port = int(metrics[-1]) if metrics else None
                return self
            if self.scheduler.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("scheduler did not start:\n" + (self.work / "scheduler.log").read_text())

    def start_worker(self, name, diablo=None, extra=()):
        args = [self.bin / "diablo-worker", "--server", self.address, "--name", name,
                "--work-dir", self.work / f"worker-{name}", "--keep-job-dirs", "--kill-grace", "1", *extra]
        if diablo:
            args += ["--diablo", diablo]
        env = dict(os.environ, DIABLO_TOKEN=self.worker_token)
        with open(self.work / f"{name}.log", "a") as log:
            self.workers[name] = subprocess.Popen(args, stderr=log, stdout=log, env=env)
        self.wait_for(lambda: any(w["name"] == name and w["status"] == "alive" for w in self.list_workers()),
                      timeout=30, what=f"worker {name} to register")
        return self.workers[name]

    def kill9(self, proc):
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self):
        for proc in list(self.workers.values()) + [self.scheduler]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in list(self.workers.values()) + [self.scheduler]:
            if proc is not None:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    # ---- diablo-ctl

    def ctl(self, *args, token=None, check=True, timeout=600):
        env = dict(os.environ, DIABLO_SERVER=self.address, DIABLO_TOKEN=token or self.user_token)
        env.pop("DIABLO_CONFIG", None)
        out = subprocess.run([self.bin / "diablo-ctl", *map(str, args)], capture_output=True, text=True, env=env,
                             timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"diablo-ctl {' '.join(map(str, args))} exited {out.returncode}:\n"
                                 f"{out.stdout}\n{out.stderr}")
        return out

    def ctl_json(self, *args, **kwargs):
        return json.loads(self.ctl("-o", "json", *args, **kwargs).stdout)

    def job(self, job_id):
        return self.ctl_json("get", job_id)

    def events(self, job_id):
        out = self.ctl("-o", "json", "logs", job_id)
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def list_workers(self):
        return self.ctl_json("workers").get("workers", [])

    def submit(self, config_path, *args):
        return self.ctl("submit", config_path, *args).stdout.strip()

    # ---- waiting

    def wait_for(self, predicate, timeout=120, what="condition", interval=0.2):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n" + self.logs_tail())

    def wait_state(self, job_id, states, timeout=300):
        """Waits for one of `states`; a job that ends in another final state fails at once."""
        states = {states} if isinstance(states, str) else set(states)
        final = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}

        def reached():
            job = self.job(job_id)
            if job.get("state") in states:
                return job
            if job.get("state") in final:
                raise AssertionError(f"job {job_id} ended {job.get('state')}, not {states}: {job.get('reason')}\n"
                                     + self.logs_tail())
            return None
        return self.wait_for(reached, timeout=timeout, what=f"job {job_id} to reach {states}")

    def logs_tail(self, lines=30):
        text = []
        for path in sorted(self.work.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            text.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(text)


# The shape of a small Llama: a model folder holding only this config.json is
# enough for the scheduler, which reads shapes, not weights.
TINY_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 1000,
               "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
               "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5}

# Stands in for `diablo train CONFIG --events` on a worker (--diablo): reports
# that it started, then waits to be stopped.
WAITING_TRAINER = """#!/usr/bin/env python3
import json, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(5))
print(json.dumps({"event": "started", "method": "diablo", "total_steps": 100, "start_step": 0,
                  "world_size": 1, "time": time.time()}), flush=True)
time.sleep(600)
"""


def write_tiny_job(work, name="job.yaml"):
    """A config-only model, a one-record dataset and a job naming them; returns the job file."""
    work = Path(work)
    (work / "model").mkdir(exist_ok=True)
    (work / "model" / "config.json").write_text(json.dumps(TINY_CONFIG))
    (work / "train.jsonl").write_text('{"instruction": "hi", "output": "hello"}\n')
    job = work / name
    job.write_text(f"model: {work / 'model'}\nmethod: {{name: diablo, blocks: 4}}\n"
                   f"data: {{train: {work / 'train.jsonl'}}}\noptim: {{max_steps: 100}}\n")
    return job


def write_waiting_trainer(path):
    Path(path).write_text(WAITING_TRAINER)
    Path(path).chmod(0o755)
    return path


def tiny_cluster(test, bin_dir):
    """For a unittest.TestCase: a Cluster stopped at cleanup, whose workers run the waiting
    trainer on a config-only model (test.cluster, test.job, test.trainer); skips the test
    when bin_dir has no diablo-worker.  The scheduler is not started yet."""
    if not (Path(bin_dir) / "diablo-worker").exists():
        test.skipTest(f"no diablo-worker in {bin_dir}")
    test.cluster = Cluster(bin_dir, heartbeat=0.3, lease_timeout=3.0)
    test.addCleanup(test.cluster.stop)
    test.job = write_tiny_job(test.cluster.work)
    test.trainer = write_waiting_trainer(test.cluster.work / "waiting-trainer.py")
    return test.cluster


def write_job(path, model, train, steps, save_every=0, extra=""):
    """A small DiaBlo job on the real model (YAML, as a user writes it)."""
    Path(path).write_text(
        f"model: {model}\n"
        "method: {name: diablo, blocks: 32}\n"
        f"data: {{train: {train}, max_seq_len: 64}}\n"
        f"optim: {{max_steps: {steps}, global_batch: 4, lr: 3.0e-3}}\n"
        f"save_every: {save_every}\n"
        "threads: 1\n" + extra)
    return path


def write_tiny_llama(directory, hidden=32, intermediate=48, layers=2, heads=4, kv_heads=2, seed=1):
    """A tiny random Llama the real trainer can fine-tune in seconds, as a Hugging Face folder:
    config.json, model.safetensors, a byte-level tokenizer.json (the 256 bytes and the ChatML
    markers) and a ChatML template (tests/worker/train/tiny_llm.h writes the same from C++).
    Returns the folder."""
    import numpy as np
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, head_dim = 258, hidden // heads
    (directory / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": None,
        "eos_token_id": 257, "torch_dtype": "float32"}))
    rng = np.random.default_rng(seed)

    def weight(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    tensors = {"model.embed_tokens.weight": weight(vocab, hidden), "lm_head.weight": weight(vocab, hidden),
               "model.norm.weight": np.ones(hidden, np.float32)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors.update({
            p + "self_attn.q_proj.weight": weight(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": weight(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": weight(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": weight(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": weight(intermediate, hidden),
            p + "mlp.up_proj.weight": weight(intermediate, hidden),
            p + "mlp.down_proj.weight": weight(hidden, intermediate),
            p + "input_layernorm.weight": np.ones(hidden, np.float32),
            p + "post_attention_layernorm.weight": np.ones(hidden, np.float32)})
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})

    def byte_char(b):  # GPT-2's byte-to-unicode map, as byte-level BPE vocabularies spell bytes
        printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
        return chr(b) if b in printable else chr(256 + [c for c in range(256) if c not in printable].index(b))

    added = [{"id": 256 + i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, text in enumerate(["<|im_start|>", "<|im_end|>"])]
    model_vocab = {byte_char(b): b for b in range(256)}
    model_vocab.update({"<|im_start|>": 256, "<|im_end|>": 257})
    (directory / "tokenizer.json").write_text(json.dumps({
        "version": "1.0", "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        "post_processor": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": model_vocab, "merges": []}}))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "eos_token": "<|im_end|>",
        "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                         "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
                         "{{ '<|im_start|>assistant\\n' }}{% endif %}"}))
    return directory
