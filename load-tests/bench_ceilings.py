#!/usr/bin/env python3
"""Closed-loop ceilings through the gateway, beside nginx proxying a trivial
handler in the same run (issue 5's yardstick).

Each run, in turn, wrk with --connections for --seconds against:
1. a second nginx (same binary, the gateway's proxy settings: keepalive
   upstream, HTTP/1.1, access log off) in front of the trivial axum handler
   (crates/test-kit/examples/trivial_handler.rs): GET /;
2. the gateway: durable creates (POST /warrior, random warriors), then the
   projection lag of exactly those rows (projected_at − updated_at in the
   read model): the read model must keep up (p99 ≤ 100 ms);
3. the gateway: GET /warrior/{id} over 20,000 random known ids.
Prints medians over --runs, each part's ratio to the trivial ceiling, and
appends them to docs/BENCHMARKS.md.

    load-tests/bench_ceilings.py [--runs 3] [--seconds 8] [--connections 64]
"""

import argparse
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import bench_reads
import benchlib
from benchlib import psql

TRIVIAL_PORT = 8099
TRIVIAL_GATEWAY_PORT = 9998

NGINX_CONF = """
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream trivial {{ server 127.0.0.1:{trivial}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://trivial;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

GET_ROOT = 'request = function() return wrk.format("GET", "/") end\n'


def start_trivial_gateway(tmp):
    """The trivial handler and an nginx in front of it; returns both processes."""
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "test-kit", "--example", "trivial_handler"],
                   cwd=benchlib.ROOT, check=True)
    handler = subprocess.Popen([str(benchlib.ROOT / "target" / "release" / "examples" / "trivial_handler"),
                                f"127.0.0.1:{TRIVIAL_PORT}"], stdout=subprocess.DEVNULL)
    conf = Path(tmp) / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, trivial=TRIVIAL_PORT, port=TRIVIAL_GATEWAY_PORT))
    nginx = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p", tmp,
                              "-g", "daemon off;"], stdout=subprocess.DEVNULL)
    benchlib.wait_http(f"http://127.0.0.1:{TRIVIAL_GATEWAY_PORT}/")
    return handler, nginx


def creates_lag(env, marker, expected, seconds=60):
    """p99 of projected_at − updated_at (ms) over the rows named marker…,
    once all `expected` of them are in the read model."""
    sql = ("SELECT count(*), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM "
           "(SELECT extract(epoch FROM projected_at - updated_at) * 1000 AS ms FROM warriors "
           f"WHERE name LIKE '{marker} %') t")
    deadline = time.monotonic() + seconds
    while True:
        count, p99 = psql(env["READ_MODEL_URL"], sql).split("|")
        if int(count) >= expected or time.monotonic() > deadline:
            return float(p99 or "nan")
        time.sleep(0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    benchlib.ensure_wrk()
    env = benchlib.stack_env()
    gateway = env["GATEWAY_URL"]

    with tempfile.TemporaryDirectory() as tmp:
        handler, nginx = start_trivial_gateway(tmp)
        try:
            # Enough warriors to look up; the creates below add more.
            if int(psql(env["READ_MODEL_URL"], "SELECT live FROM warrior_count") or 0) < 20_000:
                benchlib.wrk(env["COMMAND_URL"] + "/warrior", 64, 10, benchlib.random_create_lua())
            ids = psql(env["READ_MODEL_URL"], "SELECT id FROM warriors WHERE NOT deleted ORDER BY random() LIMIT 20000")
            id_file = Path(tmp) / "ids.txt"
            id_file.write_text(ids + "\n")

            results = {"trivial": [], "creates": [], "lookups": []}
            benchlib.settle_databases()
            for run in range(args.runs):
                print(f"run {run + 1} of {args.runs}", flush=True)
                # Each part on a quiet machine: the search indexer's merges
                # and the read model's writes after a burst of creates would
                # otherwise be billed to the lookups that follow.
                benchlib.wait_quiet()
                results["trivial"].append(benchlib.wrk(f"http://127.0.0.1:{TRIVIAL_GATEWAY_PORT}/",
                                                       args.connections, args.seconds, GET_ROOT))
                benchlib.wait_quiet()
                marker = f"ceil{uuid.uuid4().hex[:8]}"
                created = benchlib.wrk(gateway + "/warrior", args.connections, args.seconds,
                                       benchlib.random_create_lua(marker + " ", pool=8192))
                expected = int(created["rps"] * args.seconds * 0.9)
                created["lag_p99"] = creates_lag(env, marker, expected)
                results["creates"].append(created)
                benchlib.wait_quiet()
                results["lookups"].append(benchlib.wrk(gateway + "/", args.connections, args.seconds,
                                                       bench_reads.LOOKUP % id_file))
        finally:
            for process in (nginx, handler):
                process.terminate()
                process.wait(timeout=10)

    # A ceiling made of error answers is no ceiling (a 400 costs far less
    # than a create): refuse to report it.
    failed = {kind: sum(r["errors"] for r in runs) for kind, runs in results.items()}
    if any(failed.values()):
        raise SystemExit(f"bench_ceilings: non-2xx answers {failed}; no report written")

    def med(kind, key):
        return benchlib.median([r[key] for r in results[kind]])

    trivial = med("trivial", "rps")
    rows = [
        ("nginx → trivial axum handler (`GET /`)", "trivial", "—"),
        ("gateway → durable creates (`POST /warrior`)", "creates", "≥ 25%"),
        ("gateway → id lookups (`GET /warrior/{id}`)", "lookups", "≥ 50%"),
    ]
    lines = [
        f"`load-tests/bench_ceilings.py --runs {args.runs} --seconds {args.seconds} --connections "
        f"{args.connections}`: wrk, closed loop, {args.connections} connections, each part in turn within each "
        "run; a second nginx (the gateway's proxy settings) in front of an axum handler answering `ok` is the "
        "yardstick. The whole stack (relay, Kafka, projector, search indexer) runs throughout. Medians of the runs.",
        "",
        "| through nginx | req/s | p50 ms | p99 ms | non-2xx | share of the trivial ceiling | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, kind, target in rows:
        share = med(kind, "rps") / trivial if trivial else float("nan")
        errors = sum(r["errors"] for r in results[kind])
        lines.append(f"| {label} | {med(kind, 'rps'):.0f} | {med(kind, 'p50'):.2f} | {med(kind, 'p99'):.2f} | "
                     f"{errors} | {share:.0%} | {target} |")
    lines += ["", f"Projection lag of the creates (p99 of projected_at − updated_at, median of the runs): "
                  f"{med('creates', 'lag_p99'):.1f} ms (target ≤ 100 ms)."]
    benchlib.append_report("Gateway ceilings beside a trivial handler", "\n".join(lines))


if __name__ == "__main__":
    os.chdir(benchlib.ROOT)
    main()
