#!/usr/bin/env python3
"""Durable creates/s straight at command-service, group commit on vs off.

For each run, and each mode in turn, a fresh command-service instance starts
on its own port (its relay off: the stack's instance relays, so Kafka and the
projector keep working as in production), and wrk hammers `POST /warrior` at
each connection count. Prints medians over the runs and appends them to
docs/BENCHMARKS.md.

    load-tests/bench_creates.py [--runs 3] [--seconds 10] [--connections 1,16,64,256] [--write-path-only]

--write-path-only stops the stack's services for the run, so no relay, Kafka
traffic or projection competes for the cores: the ceiling of the durable
write path alone. Events wait in the outbox and are relayed afterwards; the
script times that catch-up (the relay draining a backlog of some 10^5-10^6
events, and the projection following it), a figure of its own.
"""

import argparse
import time

import benchlib
import bench_reads

POST = benchlib.random_create_lua(pool=8192)

MODES = {"group commit": "true", "one transaction per create": "false"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", default="1,16,64,256")
    parser.add_argument("--write-path-only", action="store_true")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]

    benchlib.ensure_wrk()
    env = benchlib.stack_env()
    if args.write_path_only:
        benchlib.dev("stop", "query-service")
        benchlib.dev("stop", "command-service")
    stored = int(benchlib.psql(env["EVENT_STORE_URL"], "SELECT count(*) FROM events"))
    quiet_after = benchlib.settle_databases()
    print(f"databases checkpointed, machine quiet after {quiet_after:.0f} s; ~{stored:,} events stored", flush=True)
    try:
        results, rss = measure(args, connections, env)
    finally:
        if args.write_path_only:
            backlog = int(benchlib.psql(env["EVENT_STORE_URL"], "SELECT count(*) FROM outbox"))
            benchlib.dev("up")
    catch_up = measure_catch_up(env, backlog) if args.write_path_only else None
    report(args, connections, results, rss, catch_up, stored)


def measure_catch_up(env, backlog):
    """Seconds until the relay has published the backlog, and until the
    projection (and search indexer) has caught up with it, from the moment
    the services are back."""
    started = time.monotonic()
    deadline = started + 1800
    while benchlib.psql(env["EVENT_STORE_URL"], "SELECT EXISTS (SELECT 1 FROM outbox)") == "t":
        if time.monotonic() > deadline:
            raise RuntimeError("the relay did not drain the outbox in 30 minutes")
        time.sleep(0.5)
    relayed = max(time.monotonic() - started, 0.001)
    bench_reads.wait_caught_up(env, seconds=1800)
    projected = time.monotonic() - started
    print(f"catch-up: {backlog} events relayed in {relayed:.1f} s, projected in {projected:.1f} s", flush=True)
    return backlog, relayed, projected


def measure(args, connections, env):
    results = {(mode, c): [] for mode in MODES for c in connections}
    rss = {mode: [] for mode in MODES}
    for run in range(args.runs):
        for mode, group_commit in MODES.items():
            instance = benchlib.Instance(
                "command-service",
                18095,
                {
                    "DATABASE_URL": env["EVENT_STORE_URL"],
                    "KAFKA_BROKERS": env["KAFKA_BROKERS"],
                    "GROUP_COMMIT": group_commit,
                    "RELAY_ENABLED": "false",
                    "DATABASE_MAX_CONNECTIONS": "32",
                },
            )
            try:
                for c in connections:
                    before = instance.metric_sum_count("append_batch_size")
                    figures = benchlib.wrk(instance.base + "/warrior", c, args.seconds, POST)
                    after = instance.metric_sum_count("append_batch_size")
                    batches = after[1] - before[1]
                    figures["batch"] = (after[0] - before[0]) / batches if batches else 1.0
                    results[(mode, c)].append(figures)
                    print(f"run {run + 1} {mode:>27} c={c:<4} {figures['rps']:>9.0f} req/s  "
                          f"p50 {figures['p50']:.2f} ms  p99 {figures['p99']:.2f} ms  batch {figures['batch']:.1f}  "
                          f"non-2xx {figures['errors']} {figures['socket_errors']}", flush=True)
                rss[mode].append(instance.peak_rss_mb())
            finally:
                instance.stop()
    return results, rss


def report(args, connections, results, rss, catch_up, stored):
    pipeline = (
        "with the stack's services stopped (write path alone; the relay catches up afterwards)"
        if args.write_path_only
        else "while the stack's relay, Kafka and the projector process the stream"
    )
    lines = [
        f"`load-tests/bench_creates.py --runs {args.runs} --seconds {args.seconds}"
        f"{' --write-path-only' if args.write_path_only else ''}`: wrk → command-service directly (`POST /warrior`, "
        f"durable: fsync and synchronous_commit on), {pipeline}. Medians of the runs; modes interleaved within each "
        "run. One transaction per create also takes PostgreSQL's NOTIFY queue lock at every commit (the outbox "
        "wake-up), which serialises those commits; group commit pays it once per batch. Before the runs both "
        f"databases were checkpointed and the machine left to go quiet, so no checkpoint left by an earlier step "
        f"spreads its writes into the measurement; the event store held ~{stored:,} events.",
        "",
        "| connections | mode | creates/s | p50 ms | p99 ms | mean batch | non-2xx |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in connections:
        for mode in MODES:
            rows = results[(mode, c)]
            lines.append(
                f"| {c} | {mode} | {benchlib.median([r['rps'] for r in rows]):.0f} | "
                f"{benchlib.median([r['p50'] for r in rows]):.2f} | {benchlib.median([r['p99'] for r in rows]):.2f} | "
                f"{benchlib.median([r['batch'] for r in rows]):.1f} | {sum(r['errors'] for r in rows)} |"
            )
    lines.append("")
    for c in connections:
        on = benchlib.median([r["rps"] for r in results[("group commit", c)]])
        off = benchlib.median([r["rps"] for r in results[("one transaction per create", c)]])
        lines.append(f"- {c} connections: group commit / one transaction per create = {on / off:.2f}x")
    for mode, values in rss.items():
        lines.append(f"- peak RSS of command-service ({mode}): {max(values):.0f} MB")
    if catch_up:
        backlog, relayed, projected = catch_up
        lines.append(
            f"- catch-up once the services were back: the relay published the {backlog:,} events left in the outbox "
            f"in {relayed:.1f} s ({backlog / relayed:,.0f}/s); the read model had them all {projected:.1f} s after "
            f"the restart ({backlog / projected:,.0f}/s)"
        )
    title = "Durable creates, group commit on vs off" + (" (write path only)" if args.write_path_only else "")
    benchlib.append_report(title, "\n".join(lines))


if __name__ == "__main__":
    main()
