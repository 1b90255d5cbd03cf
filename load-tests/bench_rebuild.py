#!/usr/bin/env python3
"""`query-service rebuild` under steady writes: how long the projection stalls.

A rebuild replays the event store into fresh tables while the service
serves, then locks the live tables against the projector to swap the rows
in. Creates paced at about --rate per second run through the whole rebuild
(and --margin seconds either side); the projection lag of exactly those rows
(read model: projected_at − the event's occurred_at) shows the stall, its
maximum the lock. Each run prints the rebuild's own report.

With --binaries A,B the runs alternate between rebuild binaries (e.g. a
build before a change and after it), each serving stack left as it is.

    load-tests/bench_rebuild.py [--runs 3] [--rate 500] [--binaries PATH,PATH]
"""

import argparse
import os
import subprocess
import tempfile
import time
import uuid

import benchlib
from benchlib import psql


def lag_of(env, marker, expected, seconds=60):
    """Rows named marker…, p50/p99/max of their projection lag in ms, once
    `expected` of them are in the read model."""
    deadline = time.monotonic() + seconds
    sql = (
        "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), "
        "percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms) "
        f"FROM (SELECT extract(epoch FROM projected_at - updated_at) * 1000 AS ms FROM warriors "
        f"WHERE name LIKE '{marker} %') t"
    )
    while True:
        found = psql(env["READ_MODEL_URL"], sql).split("|")
        if int(found[0]) >= expected or time.monotonic() > deadline:
            return int(found[0]), *(float(v or "nan") for v in found[1:])
        time.sleep(0.5)


def rebuild(env, binary):
    started = time.monotonic()
    out = subprocess.run(
        [binary, "rebuild"],
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": env["READ_MODEL_URL"],
             "EVENT_STORE_URL": env["EVENT_STORE_URL"], "RUST_LOG": "error"},
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"rebuild failed:\n{out.stdout}{out.stderr}")
    return time.monotonic() - started, out.stdout.strip()


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
            # The writes outlast any rebuild here; they are stopped once it is done.
            writes = subprocess.Popen(
                ["wrk", "-t1", f"-c{connections}", "-d600s", "-s", script.name, env["COMMAND_URL"] + "/warrior"],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(args.margin)
            took, report = rebuild(env, binary)
            time.sleep(args.margin)
            writes.terminate()
            writes.wait()
            os.unlink(script.name)
            written = int(psql(env["EVENT_STORE_URL"], f"SELECT count(*) FROM events WHERE data->>'name' LIKE '{marker} %'"))
            count, p50, p99, worst = lag_of(env, marker, written)
            row = (binary, took, written, count, p50, p99, worst, report)
            rows.append(row)
            print(f"run {run + 1} {binary}: rebuild {took:.1f} s; {count}/{written} creates projected; "
                  f"lag p50 {p50:.1f} p99 {p99:.1f} max {worst:.0f} ms\n  {report}", flush=True)
    lines = [
        f"Machine: {benchlib.machine()}. Commit: `{benchlib.commit()}`. {warriors} live warriors before the first run.",
        "",
        f"`load-tests/bench_rebuild.py --runs {args.runs} --rate {args.rate}`: creates paced at about "
        f"{args.rate}/s straight at command-service from {args.margin} s before each `query-service rebuild` "
        f"to {args.margin} s after it; the projection lag (projected_at − occurred_at) of exactly those creates.",
        "",
        "| rebuild binary | rebuild s | creates | lag p50 ms | lag p99 ms | lag max ms |",
        "|---|---|---|---|---|---|",
    ]
    for binary, took, written, count, p50, p99, worst, _ in rows:
        lines.append(f"| `{binary}` | {took:.1f} | {count}/{written} | {p50:.1f} | {p99:.1f} | {worst:.0f} |")
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
