#!/usr/bin/env python3
"""Where the CPU goes: CPU time per request, per process, for each request
type of the Gatling profile, through the gateway.

For each request type wrk runs for --seconds at --connections; the script
reads every process's CPU time (utime + stime from /proc) before and after
and prints microseconds of CPU per request for each part of the stack
(nginx, each service, each PostgreSQL cluster with its backends, Kafka, wrk
itself), plus the machine-wide figure. `--close` sends `Connection: close`
like Gatling's virtual users, which each open a connection of their own.

Creates keep running through the relay, Kafka and the projector after wrk
stops; the script waits until the projection has caught up before reading
the counters again, so a create's figure includes its whole path.

Batches (group commit, relay, projector) make a create cheaper the more
arrive at once, so a saturating wrk understates what a create costs at the
Gatling peak's ~1,000 a second: `--delay-ms` makes each connection pause
between requests (16 connections with 15 ms ≈ 1,000 requests a second).

    load-tests/cpu_profile.py [--seconds 8] [--connections 16] [--close] [--delay-ms N]
"""

import argparse
import os
import tempfile
import urllib.request
from collections import defaultdict
from pathlib import Path

import benchlib
import bench_reads

TICKS = os.sysconf("SC_CLK_TCK")


def classify(pid, comm, args, parents):
    if comm == "nginx":
        return "nginx"
    if comm in ("command-service", "query-service", "wrk"):
        return comm
    if comm == "postgres":
        # A backend's parent is its cluster's postmaster, started with -D <data dir>.
        data = args if "-D " in args else parents.get(parents.get(pid, (0,))[0], (0, "", ""))[2]
        for cluster in ("eventstore", "readmodel"):
            if f"/pg/{cluster} " in data:
                return f"postgres {cluster}"
        return "postgres"
    if comm == "java" and "kafka" in args:
        return "kafka"
    return None


def snapshot():
    """CPU seconds per part of the stack, and the machine's total busy time."""
    processes = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        cpu = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / TICKS
        processes[int(entry.name)] = (ppid, comm, args, cpu)
    parents = {pid: (p[0], p[1], p[2]) for pid, p in processes.items()}
    parts = defaultdict(float)
    for pid, (ppid, comm, args, cpu) in processes.items():
        part = classify(pid, comm, args, parents)
        if part:
            parts[part] += cpu
    return parts, benchlib.machine_busy_seconds()


def diff(before, after):
    parts = {k: after[0].get(k, 0) - before[0].get(k, 0) for k in set(after[0]) | set(before[0])}
    return parts, after[1] - before[1]


def requests_of(env, close, delay_ms):
    header = 'wrk.headers["Connection"] = "close"\n' if close else ""
    if delay_ms:
        header += f"\nfunction delay() return {delay_ms} end\n"
    gateway = env["GATEWAY_URL"]
    yield "create", gateway + "/warrior", benchlib.random_create_lua(extra=header)
    # Read after the creates ran: on a fresh stack there was nothing to look up before.
    ids = tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False)
    with urllib.request.urlopen(env["QUERY_URL"] + "/api/v1/queries/warriors", timeout=5) as response:
        import json

        for warrior in json.load(response):
            ids.write(warrior["id"] + "\n")
    ids.close()
    yield "lookup", gateway + "/", bench_reads.LOOKUP % ids.name + header
    yield "search", gateway + "/", bench_reads.SEARCH + header
    yield "search without term", gateway + "/warrior", header


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--close", action="store_true", help="one connection per request, like Gatling's users")
    parser.add_argument("--delay-ms", type=int, default=0, help="pause of each connection between requests")
    args = parser.parse_args()
    benchlib.ensure_wrk()
    env = benchlib.stack_env()
    rows = []
    for name, url, lua in requests_of(env, args.close, args.delay_ms):
        bench_reads.wait_caught_up(env)
        benchlib.wait_quiet()
        before = snapshot()
        figures = wrk_all(url, args.connections, args.seconds, lua)
        if name == "create":
            bench_reads.wait_caught_up(env)
        parts, busy = diff(before, snapshot())
        total = figures["requests"]
        rows.append((name, figures, total, parts, busy))
    order = ["nginx", "command-service", "query-service", "postgres eventstore", "postgres readmodel", "kafka", "wrk"]
    print(f"CPU microseconds per request ({args.connections} connections, {args.seconds}s, "
          f"{'Connection: close' if args.close else 'keep-alive'}"
          f"{f', {args.delay_ms} ms between requests' if args.delay_ms else ''}):")
    print("| request | req/s | " + " | ".join(order) + " | machine |")
    print("|---" * (len(order) + 3) + "|")
    for name, figures, total, parts, busy in rows:
        cells = [f"{parts.get(p, 0) / total * 1e6:.0f}" for p in order]
        print(f"| {name} | {figures['rps']:.0f} | " + " | ".join(cells) + f" | {busy / total * 1e6:.0f} |")


def wrk_all(url, connections, seconds, lua):
    figures = benchlib.wrk(url, connections, seconds, lua)
    figures["requests"] = figures["rps"] * seconds
    return figures


if __name__ == "__main__":
    main()
