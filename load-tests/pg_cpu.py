#!/usr/bin/env python3
"""Where each PostgreSQL's CPU goes, by who asked: runs a command (a load
test) and prints the CPU seconds each database spent on it per client
(`application_name`: command-service, its relay, query-service, its search
and projector pools) and per background process (autovacuum, WAL writer,
checkpointer...). benchmark.py uses the same sampler for its report.

    load-tests/pg_cpu.py -- load-tests/gatling.sh peak
    load-tests/pg_cpu.py --seconds 30          # just watch the running stack

Backends are sampled from /proc every second (utime+stime), and named from
pg_stat_activity as they appear; a backend that exits between two samples
loses its last second. The stack must run (`./dev up`).
"""

import argparse
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import benchlib  # noqa: E402

PIDS = benchlib.ROOT / ".state" / "pids"
CLK = os.sysconf("SC_CLK_TCK")
DATABASES = {"eventstore-db": "EVENT_STORE_URL", "readmodel-db": "READ_MODEL_URL"}


def children_cpu(master):
    """CPU seconds of each child of the postmaster (its backends and workers)."""
    cpu = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / CLK
    return cpu


def names(url):
    """pid → who: the client's application_name, else the backend type (hidden
    from a role without pg_read_all_stats: then "server process")."""
    sql = "SELECT pid, coalesce(nullif(application_name, ''), backend_type, 'server process') FROM pg_stat_activity"
    out = benchlib.psql(url, sql)
    return {int(pid): who for pid, _, who in (line.partition("|") for line in out.splitlines() if line)}


class PgCpu(threading.Thread):
    """Samples both databases' backends every second until `finish()`,
    which returns {database: [(client, CPU seconds)]}, busiest first."""

    def __init__(self, env, interval=1.0):
        super().__init__(daemon=True)
        self.env, self.interval = env, interval
        self.masters = {db: int((PIDS / f"{db}.pid").read_text()) for db in DATABASES}
        self.first = {db: children_cpu(m) for db, m in self.masters.items()}
        self.last = {db: dict(c) for db, c in self.first.items()}
        self.who = {db: {} for db in DATABASES}
        self.stop_event = threading.Event()

    def sample(self):
        for db, master in self.masters.items():
            cpu = children_cpu(master)
            self.last[db].update(cpu)
            # Asking only when a process appeared: a psql per database every
            # second cost ~0.08 cores (pools keep their backends for good).
            if cpu.keys() - self.who[db].keys():
                try:
                    self.who[db].update(names(self.env[DATABASES[db]]))
                except (subprocess.CalledProcessError, OSError):
                    continue  # the database is down for a moment (fault tests): ask again
                for pid in cpu:  # e.g. the logger: not in pg_stat_activity
                    self.who[db].setdefault(pid, "not in pg_stat_activity")

    def run(self):
        while not self.stop_event.wait(self.interval):
            self.sample()

    def finish(self):
        self.stop_event.set()
        self.join()
        self.sample()
        result = {}
        for db in DATABASES:
            spent = defaultdict(float)
            for pid, cpu in self.last[db].items():
                spent[self.who[db].get(pid, "exited before it was named")] += cpu - self.first[db].get(pid, 0.0)
            result[db] = sorted(spent.items(), key=lambda kv: -kv[1])
        return result


def table(result, wall):
    """Markdown: one row per database and client with CPU seconds and cores."""
    rows = ["| database | client | CPU s | cores | share |", "|---|---|---|---|---|"]
    for db, spent in result.items():
        total = sum(cpu for _, cpu in spent)
        rows.append(f"| {db} | **all** | {total:.1f} | {total / wall:.2f} | 100% |")
        for name, cpu in spent:
            if cpu >= 0.05:
                rows.append(f"| {db} | {name} | {cpu:.1f} | {cpu / wall:.2f} | {100 * cpu / max(total, 1e-9):.0f}% |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, help="sample this long instead of running a command")
    parser.add_argument("command", nargs="*", help="the command to run while sampling (after --)")
    args = parser.parse_args()
    if not args.command and args.seconds is None:
        parser.error("give a command (after --) or --seconds")
    sampler = PgCpu(benchlib.dev_env())
    started = time.monotonic()
    sampler.start()
    status = 0
    if args.command:
        status = subprocess.run(args.command).returncode
    else:
        time.sleep(args.seconds)
    result = sampler.finish()
    wall = time.monotonic() - started
    print(f"\nPostgreSQL CPU by client over {wall:.0f} s (cores = CPU s / wall s)\n")
    print(table(result, wall))
    sys.exit(status)


if __name__ == "__main__":
    main()
