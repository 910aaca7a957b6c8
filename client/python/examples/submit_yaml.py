#!/usr/bin/env python3
"""Submit a YAML job config, follow the job with a progress line, download the adapter.

Usage: submit_yaml.py CONFIG.yaml OUT_DIR

The scheduler's address and the API token come from DIABLO_SERVER and
DIABLO_TOKEN.  Local files the config names (model, data.train, data.eval,
init_adapter; relative paths against the config's directory) are uploaded
first, once per content.  Exit status: 0 when the job succeeded and its
adapter is in OUT_DIR/adapter, 1 when the job failed or was cancelled,
2 when a call failed.
"""

import sys

from diablo_client import Client, DiabloError, job_pb2, state_name


def say(text):
    """A line of its own (on a terminal: over the progress line, which the next step redraws)."""
    print(("\r\033[K" if sys.stdout.isatty() else "") + text, flush=True)


def show(event):
    """Prints one JobEvent: a progress line for steps, a line for the rest."""
    kind = event.WhichOneof("kind")
    if kind == "step":
        m = event.step
        line = (f"  step {m.step}/{m.total_steps}  loss {m.loss:.4f}  lr {m.lr:.2e}  "
                f"{m.tokens_per_s:.0f} tok/s  ETA {m.eta_s:.0f}s")
        if sys.stdout.isatty():  # one line, redrawn
            print("\r\033[K" + line, end="\n" if m.step == m.total_steps else "", flush=True)
        else:
            print(line)
    elif kind == "state":
        say(f"state: {state_name(event.state.to)}  ({event.state.reason})")
    elif kind == "checkpoint":
        say(f"checkpoint at step {event.checkpoint.step}{' (final)' if event.checkpoint.final else ''}")
    elif kind == "eval":
        say(f"eval at step {event.eval.step}: loss {event.eval.loss:.4f}")
    elif kind == "log" and event.log.source != "trainer":
        say(f"{event.log.source}: {event.log.line}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    config, out_dir = sys.argv[1:]
    try:
        with Client(timeout=30) as client:
            job = client.submit_file(config, labels={"pipeline": "example"})
            print(f"submitted {job.id} ({job.name}), estimated {job.estimated_bytes / 2**30:.2f} GiB per rank")
            final = client.wait(job.id, on_event=show)
            if final.state != job_pb2.JOB_STATE_SUCCEEDED:
                print(f"job {final.id} {state_name(final.state)}: {final.reason}", file=sys.stderr)
                return 1
            for path in client.download(job.id, out_dir, only="adapter"):
                print(f"downloaded {path} (sha256 ok)")
    except DiabloError as e:
        print(f"submit_yaml.py: {e.code.name}: {e.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
