#!/usr/bin/env python3
"""`query-service rebuild` under steady writes: how long the projection stalls.

A rebuild replays the event store into fresh tables while the service
serves, then locks the live tables against the projector to swap the rows
in. Creates paced at about --rate per second run through the whole rebuild
(and --margin seconds either side) while the projector's offsets stored in
the read model are sampled every 50 ms: the longest time they stood still
is the projector's longest stall. (Not the rows' projected_at: a rebuild
writes its own, and before 763a8cc it rewrote every row's. Nor the live
count: after a swap the projector re-applies, changing nothing, the events
the rebuild already applied.) Each run prints the rebuild's own report.

With --binaries A,B the runs alternate between rebuild binaries (e.g. a
build before a change and after it), each serving stack left as it is.

    load-tests/bench_rebuild.py [--runs 3] [--rate 500] [--binaries PATH,PATH]
"""

import argparse
import os
import signal
import subprocess
import tempfile
import time
import uuid

import benchlib
from benchlib import psql


def watch_offsets(env):
    """A psql sampling (database clock, the projector's stored offsets) every
    50 ms until stopped."""
    watcher = subprocess.Popen(
        ["psql", env["READ_MODEL_URL"], "-X", "-At"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    watcher.stdin.write(
        "SELECT extract(epoch FROM clock_timestamp()), sum(next_offset) FROM projection_offsets\n\\watch 0.05\n"
    )
    # Read once \watch is interrupted: then psql exits, flushing its output.
    watcher.stdin.close()
    return watcher


def longest_stall(watcher, start, end):
    """Seconds of the longest stretch within [start, end] (epoch seconds)
    over which the sampled offsets did not change."""
    watcher.send_signal(signal.SIGINT)
    out = watcher.stdout.read()
    watcher.wait()
    samples = [tuple(map(float, line.split("|"))) for line in out.splitlines() if line.count("|") == 1]
    longest, since, last = 0.0, None, None
    for at, value in samples:
        if value != last:
            since, last = at, value
        elif start <= at <= end:
            longest = max(longest, at - max(since, start))
    return longest


def projected(env, marker, expected, seconds=60):
    """How many rows named marker… the read model holds, once it holds
    `expected` of them or `seconds` passed."""
    deadline = time.monotonic() + seconds
    while True:
        found = int(psql(env["READ_MODEL_URL"], f"SELECT count(*) FROM warriors WHERE name LIKE '{marker} %'"))
        if found >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def rebuild(env, binary):
    started = time.time()
    out = subprocess.run(
        [binary, "rebuild"],
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": env["READ_MODEL_URL"],
             "EVENT_STORE_URL": env["EVENT_STORE_URL"], "RUST_LOG": "error"},
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"rebuild failed:\n{out.stdout}{out.stderr}")
    return started, time.time(), " ".join(out.stdout.split())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=500, help="creates per second, about")
    parser.add_argument("--margin", type=int, default=5, help="seconds of writes before and after the rebuild")
    parser.add_argument("--binaries", default=str(benchlib.ROOT / "target" / "release" / "query-service"))
    parser.add_argument("--no-report", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args()
    benchlib.ensure_wrk()
    env = benchlib.stack_env()
    binaries = args.binaries.split(",")
    warriors = psql(env["READ_MODEL_URL"], "SELECT live FROM warrior_count")
    rows = []
    for run in range(args.runs):
        for binary in binaries:
            benchlib.wait_quiet()
            marker = f"Rebuild{uuid.uuid4().hex}"
            connections = 10
            delay_ms = max(1, round(connections * 1000 / args.rate) - 1)
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
                script.write(benchlib.random_create_lua(marker + " ", f"\nfunction delay() return {delay_ms} end\n"))
            watcher = watch_offsets(env)
            # The writes outlast any rebuild here; they are stopped once it is done.
            writes = subprocess.Popen(
                ["wrk", "-t1", f"-c{connections}", "-d600s", "-s", script.name, env["COMMAND_URL"] + "/warrior"],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(args.margin)
            started, ended, report = rebuild(env, binary)
            time.sleep(args.margin)
            writes.terminate()
            writes.wait()
            os.unlink(script.name)
            stall = longest_stall(watcher, started, ended + args.margin)
            written = int(psql(env["EVENT_STORE_URL"], f"SELECT count(*) FROM events WHERE data->>'name' LIKE '{marker} %'"))
            count = projected(env, marker, written)
            row = (binary, ended - started, written, count, stall, report)
            rows.append(row)
            print(f"run {run + 1} {binary}: rebuild {ended - started:.1f} s; {count}/{written} creates projected; "
                  f"longest projector stall {stall * 1000:.0f} ms\n  {report}", flush=True)
    lines = [
        f"`load-tests/bench_rebuild.py --runs {args.runs} --rate {args.rate}`: creates paced at about "
        f"{args.rate}/s straight at command-service from {args.margin} s before each `query-service rebuild` "
        f"to {args.margin} s after it; the projector's offsets stored in the read model sampled every 50 ms: "
        "their longest stretch unchanged from the rebuild's start to the writes' end is the projector's longest stall. "
        f"{warriors} live warriors before the first run.",
        "",
        "| rebuild binary | rebuild s | creates projected | longest projector stall ms |",
        "|---|---|---|---|",
    ]
    for binary, took, written, count, stall, _ in rows:
        lines.append(f"| `{binary}` | {took:.1f} | {count}/{written} | {stall * 1000:.0f} |")
    lines.append("")
    lines.append("The rebuilds' reports:")
    lines.append("")
    for binary, *_, report in rows:
        lines.append(f"- `{binary}`: {report}")
    if args.no_report:
        print("\n".join(lines))
    else:
        benchlib.append_report("Rebuild under steady writes", "\n".join(lines))


if __name__ == "__main__":
    main()
