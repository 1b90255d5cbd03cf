#!/usr/bin/env python3
"""Reads at scale and projection lag.

1. Loads the stack up to --warriors live warriors (creates through wrk),
   shaped like the Gatling feeder's valid rows.
2. wrk at --connections straight at query-service: `GET /warrior/{id}` over
   random known ids, and `GET /warrior?t=` with random 1–50 letter terms.
3. Steady creates at about --rate per second for --seconds, then the
   projection lag of exactly those rows from the read model itself
   (projected_at − the event's occurred_at).
Prints medians over --runs and appends them to docs/BENCHMARKS.md.

    load-tests/bench_reads.py [--warriors 150000] [--runs 3] [--seconds 10]
"""

import argparse
import json
import math
import os
import subprocess
import tempfile
import time
import urllib.request
import uuid

import benchlib
from benchlib import psql

# Rows shaped like the Gatling feeder's (names of 1–100 characters, 1–26
# skills): what users load, and what lookups and search are judged on.
CREATE = benchlib.random_create_lua(shape="gatling")

WARM_UP_SECONDS = 3

LOOKUP = """
local ids = {}
for line in io.lines("%s") do ids[#ids + 1] = line end
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/warrior/" .. ids[math.random(#ids)])
end
"""

SEARCH = """
local letters = "abcdefghijklmnopqrstuvwxyz  "
math.randomseed(os.time())
request = function()
  local n = math.random(1, 50)
  local term = {}
  for i = 1, n do
    local k = math.random(#letters)
    term[i] = letters:sub(k, k)
  end
  local t = (table.concat(term):gsub("^%s+", ""):gsub("%s+$", ""))
  if t == "" then t = "a" end
  return wrk.format("GET", "/warrior?t=" .. (t:gsub(" ", "%%20")))
end
"""


def paced_lua(marker, delay_ms):
    """Random creates named `marker…`; each connection waits delay_ms between
    requests, so the rate is about connections / (delay + latency)."""
    return benchlib.random_create_lua(marker + " ", f"\nfunction delay() return {delay_ms} end\n", shape="gatling")


def count(gateway):
    with urllib.request.urlopen(gateway + "/counting-warriors", timeout=10) as response:
        return json.load(response)["count"]


def load_up_to(env, target):
    """Creates warriors until the read model holds `target` live ones. Each
    wrk run is sized by the previous one's rate, and the count is read once
    the projection has caught up: fixed 10 s runs against a lagging count
    once stopped at 229k warriors for a target of 150k, and search times
    grow with the table. The first run (2 s) only measures the rate: a first
    10 s run loaded 185k at 18.5k creates/s."""
    seconds = 2  # a probe: its rate sizes the next run
    while (have := count(env["GATEWAY_URL"])) < target:
        print(f"loading: {have} of {target} warriors", flush=True)
        rate = max(benchlib.wrk(env["COMMAND_URL"] + "/warrior", 64, seconds, CREATE)["rps"], 1.0)
        wait_caught_up(env)
        seconds = max(1, min(10, math.ceil((target - count(env["GATEWAY_URL"])) / rate)))


def metric_total(url, name):
    """Sum of all series of a metric on a /metrics page."""
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def wait_caught_up(env, seconds=300):
    """Waits until nothing is waiting in the outbox, on Kafka or for the
    search indexer, so a measurement never starts in the middle of the
    projection's backlog. (Right after loading 150k warriors the indexer
    still had ~60k names to merge, which took 0.6 of a core from the first
    lookups.)"""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pending = metric_total(env["COMMAND_URL"], "relay_lag_events") + metric_total(env["QUERY_URL"], "projector_lag_events")
        if pending == 0 and psql(env["READ_MODEL_URL"], "SELECT count(*) FROM search_queue") == "0":
            return
        time.sleep(1)
    raise RuntimeError("the projection did not catch up")


def projected_lag(env, marker, expected, seconds=60):
    """p50 and p99 of (projected_at − occurred_at) in ms over the rows named
    marker…, once all `expected` of them are in the read model."""
    deadline = time.monotonic() + seconds
    sql = (
        "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) "
        f"FROM (SELECT extract(epoch FROM projected_at - updated_at) * 1000 AS ms FROM warriors WHERE name LIKE '{marker} %') t"
    )
    while True:
        found = psql(env["READ_MODEL_URL"], sql).split("|")
        if int(found[0]) >= expected or time.monotonic() > deadline:
            return float(found[1] or "nan"), float(found[2] or "nan")
        time.sleep(0.5)


def pid_of(part):
    return int((benchlib.ROOT / ".state" / "pids" / f"{part}.pid").read_text())


def peak_rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warriors", type=int, default=150_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=1000)
    args = parser.parse_args()

    benchlib.ensure_wrk()
    env = benchlib.stack_env()
    load_up_to(env, args.warriors)
    wait_caught_up(env)
    # Background work a load leaves (checkpoints of its WAL, autovacuum) is
    # not the loaded service's cost: let it settle first. The first
    # autovacuum of the loaded tables came about a minute after loading, in
    # the middle of the first run (search p99 38-41 ms against 14-17 in the
    # runs after it): vacuum them now, as after any bulk load.
    psql(env["READ_MODEL_URL"], "VACUUM (ANALYZE) warriors, warrior_names")
    psql(env["EVENT_STORE_URL"], "VACUUM (ANALYZE) events")
    print(f"quiet after {benchlib.wait_quiet(seconds=180):.0f} s", flush=True)
    ids = psql(env["READ_MODEL_URL"], "SELECT id FROM warriors WHERE NOT deleted ORDER BY random() LIMIT 20000").splitlines()
    with tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False) as id_file:
        id_file.write("\n".join(ids))

    results = {"lookup": [], "search": [], "lag_p50": [], "lag_p99": [], "rate": []}
    try:
        for run in range(args.runs):
            # The previous run's creates leave merges for the search indexer.
            wait_caught_up(env)
            print(f"quiet after {benchlib.wait_quiet(seconds=180):.0f} s", flush=True)
            for name, lua, path in (("lookup", LOOKUP % id_file.name, "/"), ("search", SEARCH, "/")):
                # Warm-up, not counted: the first run after loading read pages
                # not yet in shared buffers (lookups 21k/s, search p99 41 ms,
                # against 25-29k and 14-17 ms in the runs after it).
                benchlib.wrk(env["QUERY_URL"] + path, args.connections, WARM_UP_SECONDS, lua)
                figures = benchlib.wrk(env["QUERY_URL"] + path, args.connections, args.seconds, lua)
                results[name].append(figures)
                print(f"run {run + 1} {name}: {figures}", flush=True)

            marker = f"Lag{uuid.uuid4().hex}"
            connections = 10
            delay_ms = max(1, round(connections * 1000 / args.rate) - 1)
            paced = benchlib.wrk(env["COMMAND_URL"] + "/warrior", connections, args.seconds, paced_lua(marker, delay_ms))
            lag = projected_lag(env, marker, int(paced["rps"] * args.seconds * 0.95))
            results["rate"].append(paced["rps"])
            results["lag_p50"].append(lag[0])
            results["lag_p99"].append(lag[1])
            print(f"run {run + 1} projection lag at {paced['rps']:.0f} creates/s: p50 {lag[0]} ms, p99 {lag[1]} ms", flush=True)
    finally:
        os.unlink(id_file.name)

    def row(name, label):
        rows = results[name]
        return (
            f"| {label} | {benchlib.median([r['rps'] for r in rows]):.0f} | {benchlib.median([r['p50'] for r in rows]):.2f} | "
            f"{benchlib.median([r['p99'] for r in rows]):.2f} | {sum(r['errors'] for r in rows)} |"
        )

    body = "\n".join([
        f"`load-tests/bench_reads.py --warriors {args.warriors} --runs {args.runs} --seconds {args.seconds}`: wrk with "
        f"{args.connections} connections straight at query-service, {count(env['GATEWAY_URL'])} live warriors "
        "(loaded with rows shaped like the Gatling feeder's: names of 1–100 letters and spaces, no skills 1 time "
        "in 14, else 1–26 of 26 skills). "
        "Lookups go over 20,000 random known ids (each lookup also checks the event store's head version for read "
        "your writes); search terms are 1–50 random letters and spaces. The loaded tables are vacuumed before the runs, and each measured run follows "
        f"{WARM_UP_SECONDS} s of the same requests, not counted. Medians of the runs.",
        "",
        "| request | req/s | p50 ms | p99 ms | non-2xx |",
        "|---|---|---|---|---|",
        row("lookup", "`GET /warrior/{id}`"),
        row("search", "`GET /warrior?t=…`"),
        "",
        f"Projection lag (event committed → row written in the read model) at a steady "
        f"{benchlib.median(results['rate']):.0f} creates/s for {args.seconds} s: "
        f"p50 {benchlib.median(results['lag_p50']):.1f} ms, p99 {benchlib.median(results['lag_p99']):.1f} ms.",
        "",
        f"Peak RSS: query-service {peak_rss_mb(pid_of('query-service')):.0f} MB, "
        f"command-service {peak_rss_mb(pid_of('command-service')):.0f} MB.",
    ])
    benchlib.append_report("Reads at scale and projection lag", body)


if __name__ == "__main__":
    main()
