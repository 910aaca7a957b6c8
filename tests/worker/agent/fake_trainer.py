#!/usr/bin/python3
"""A stand-in for `diablo train CONFIG --events [--resume]` in the agent's tests.

It writes the JSON-lines events the real trainer writes (docs/training.md,
"Progress and events") and behaves as the test asks through the config the
agent hands it: {"fake_trainer": {"mode": ..., "record": PATH, ...}}, or, for
a config the real trainer's parser must accept, through fake_trainer.json
beside this script.  What it saw (argv, torchrun environment, config, its
RLIMIT_DATA, the SHA-256 of the outputs it wrote) goes to PATH.rank<N>.json;
the signals it received to PATH.rank<N>.log.

Modes:
  succeed         started, steps, a checkpoint at step 2, outputs, finished, exit 0
  crash           started, 40 lines on stderr, exit 2
  error           an `error` event with fake_trainer.code / .message, exit 1
  wait_for_term   started, then wait; on SIGTERM (optionally writing a
                  checkpoint first) an `interrupted` error and exit 5
  ignore_term     started, then wait, ignoring SIGTERM
  gang_failure    rank 0 fails at once (`failed`, exit 1); every other rank
                  hangs, ignoring SIGTERM, as one blocked in a collective would
"""
import hashlib
import json
import os
import resource
import signal
import sys
import time


def emit(event, **fields):
    line = dict(event=event, **fields)
    line["time"] = time.time()
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def write_file(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_checkpoint(output_dir, step):
    directory = os.path.join(output_dir, "checkpoints", "step-%08d" % step)
    write_file(os.path.join(directory, "adapter_model.safetensors"), b"checkpoint at step %d" % step)
    write_file(os.path.join(directory, "trainer_state.json"), json.dumps({"step": step}).encode())
    emit("checkpoint", step=step, path=directory, final=False)


def main():
    config = json.load(open(sys.argv[2]))
    fake = config.get("fake_trainer")
    if fake is None:
        with open(os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "fake_trainer.json")) as f:
            fake = json.load(f)
    mode = fake.get("mode", "succeed")
    rank = int(os.environ.get("RANK", "0"))
    output_dir = config["output_dir"]
    record_base = "%s.rank%d" % (fake["record"], rank)
    env_names = ["RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"]
    record = {
        "argv": sys.argv[1:],
        "env": {name: os.environ.get(name) for name in env_names},
        "config": config,
        "cwd": os.getcwd(),
        # The agent's memory cap: [soft, hard], -1 for none.
        "rlimit_data": list(resource.getrlimit(resource.RLIMIT_DATA)),
    }
    latest = os.path.join(output_dir, "checkpoints", "latest")
    if os.path.exists(latest):
        name = open(latest).read().strip()
        state = os.path.join(output_dir, "checkpoints", name, "trainer_state.json")
        record["resumed_from"] = name
        record["resumed_state"] = open(state).read() if os.path.exists(state) else None

    def save_record():
        with open(record_base + ".json.tmp", "w") as f:
            json.dump(record, f)
        os.replace(record_base + ".json.tmp", record_base + ".json")

    def note(text):
        with open(record_base + ".log", "a") as f:
            f.write(text + "\n")

    save_record()
    print("fake trainer rank %d starting in mode %s" % (rank, mode), file=sys.stderr, flush=True)

    if mode in ("wait_for_term", "ignore_term") or (mode == "gang_failure" and rank != 0):
        def on_term(signum, frame):
            note("SIGTERM")
            if mode in ("ignore_term", "gang_failure"):
                return
            if fake.get("checkpoint_on_term") and rank == 0:
                write_checkpoint(output_dir, 3)
            emit("error", code="interrupted", message="stopped by SIGTERM at step 3", step=3)
            sys.exit(5)

        signal.signal(signal.SIGTERM, on_term)
        if mode == "gang_failure":
            open(record_base + ".ready", "w").close()  # rank 0 fails only after this

    if rank != 0:
        # Only rank 0 reports; anything another rank prints must not be forwarded.
        emit("step", step=1, total_steps=4, loss=9.0, from_rank=rank)
        if mode in ("wait_for_term", "ignore_term", "gang_failure"):
            time.sleep(60)
        return 0

    emit("started", method="diablo", total_steps=4, start_step=0, world_size=int(os.environ.get("WORLD_SIZE", "1")))
    if mode == "succeed":
        for step in range(1, 5):
            emit("step", step=step, total_steps=4, loss=2.0 / step, lr=1e-4, tokens_per_s=100.0)
            if step == 2:
                write_checkpoint(output_dir, 2)
        outputs = {
            "adapter/adapter_model.safetensors": bytes(range(256)) * 40,
            "adapter/adapter_config.json": json.dumps({"peft_type": "DIABLO"}).encode(),
            "train_config.json": json.dumps(config).encode(),
        }
        record["outputs"] = {}
        for name, data in outputs.items():
            write_file(os.path.join(output_dir, name), data)
            record["outputs"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        save_record()
        emit("finished", step=4, loss=0.5, output=output_dir)
        return 0
    if mode == "gang_failure":
        others = ["%s.rank%d.ready" % (fake["record"], r) for r in range(1, int(os.environ["LOCAL_WORLD_SIZE"]))]
        deadline = time.time() + 20
        while time.time() < deadline and not all(os.path.exists(p) for p in others):
            time.sleep(0.02)
        emit("error", code="failed", message="the gradient all-reduce did not complete")
        return 1
    if mode == "crash":
        for i in range(40):
            print("fake crash line %d" % i, file=sys.stderr)
        sys.stderr.flush()
        return 2
    if mode == "error":
        print("Error: " + fake["message"], file=sys.stderr, flush=True)
        emit("error", code=fake["code"], message=fake["message"])
        return 1
    if mode in ("wait_for_term", "ignore_term"):
        deadline = time.time() + 60
        while time.time() < deadline:
            time.sleep(0.05)
        note("never stopped")
        return 0
    print("fake trainer: unknown mode " + mode, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main())
