#!/usr/bin/env bash
# Starts a real diablo-scheduler on a free loopback port, asks it for its
# version with diablo-ctl, checks the bad-address error, then stops it with
# SIGTERM and expects a clean exit.  Without --data-dir its data goes to the
# per-user state directory (a private one here), never the working directory.
set -u
scheduler=$1; ctl=$2
log=$(mktemp); state=$(mktemp -d); cwd=$(mktemp -d)
trap 'kill $pid 2>/dev/null; rm -rf "$log" "$state" "$cwd"' EXIT

(cd "$cwd" && XDG_STATE_HOME="$state" exec "$scheduler" --listen 127.0.0.1:0) 2>"$log" &
pid=$!
port=""
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$log")
  [ -n "$port" ] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
[ -n "$port" ] || { echo "FAIL: scheduler did not report its port"; cat "$log"; exit 1; }

out=$("$ctl" --server "127.0.0.1:$port" version) || { echo "FAIL: version call: $out"; exit 1; }
echo "$out"
grep -q "^server: diablo-scheduler .* APIs: diablo.v1" <<<"$out" || { echo "FAIL: no server line"; exit 1; }

# A typo in the address is a usage error (exit 2) naming the flag.
if err=$("$ctl" --server "127.0.0.1" version 2>&1); then echo "FAIL: bad address accepted"; exit 1; fi
grep -q -- "--server" <<<"$err" || { echo "FAIL: error does not name --server: $err"; exit 1; }

# Nothing listening: exit 1 with a hint, within the deadline.
if err=$("$ctl" --server "127.0.0.1:1" --timeout 2 version 2>&1); then echo "FAIL: dead server answered"; exit 1; fi
grep -q "is diablo-scheduler running" <<<"$err" || { echo "FAIL: no hint: $err"; exit 1; }

# The address can come from a config file too (TOML, as docs/service.md shows).
config=$(mktemp)
printf 'server = "127.0.0.1:%s"\n' "$port" >"$config"
out=$(env -u DIABLO_SERVER "$ctl" --config "$config" version) || { echo "FAIL: config file: $out"; rm -f "$config"; exit 1; }
rm -f "$config"
grep -q "at 127.0.0.1:$port" <<<"$out" || { echo "FAIL: config file server not used: $out"; exit 1; }

kill -TERM $pid
wait $pid; rc=$?
[ $rc -eq 0 ] || { echo "FAIL: scheduler exited $rc after SIGTERM"; cat "$log"; exit 1; }
grep -q "received SIGTERM" "$log" || { echo "FAIL: no shutdown message"; exit 1; }
[ -f "$state/diablo/scheduler/scheduler.db" ] || { echo "FAIL: no scheduler.db in the default state directory"; exit 1; }
[ -z "$(ls -A "$cwd")" ] || { echo "FAIL: the scheduler wrote into its working directory: $(ls -A "$cwd")"; exit 1; }
echo "ok"
