#!/usr/bin/env python3
"""Where each PostgreSQL's CPU goes, by who asked: runs a command (a load
test) and prints the CPU seconds each database spent on it per client
(`application_name`: command-service, its relay, query-service, its search
and projector pools) and per background process (autovacuum, WAL writer,
checkpointer...).

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
    """pid → who: the client's application_name, else the backend type."""
    sql = "SELECT pid, coalesce(nullif(application_name, ''), backend_type) FROM pg_stat_activity"
    out = benchlib.psql(url, sql)
    return {int(pid): who for pid, _, who in (line.partition("|") for line in out.splitlines() if line)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, help="sample this long instead of running a command")
    parser.add_argument("command", nargs="*", help="the command to run while sampling (after --)")
    args = parser.parse_args()
    if not args.command and args.seconds is None:
        parser.error("give a command (after --) or --seconds")
    env = benchlib.dev_env()
    masters = {db: int((PIDS / f"{db}.pid").read_text()) for db in DATABASES}
    first = {db: children_cpu(m) for db, m in masters.items()}
    last = {db: dict(c) for db, c in first.items()}
    who = {db: {} for db in DATABASES}
    process = subprocess.Popen(args.command) if args.command else None
    started = time.monotonic()
    while True:
        for db, master in masters.items():
            last[db].update(children_cpu(master))
            try:
                who[db].update(names(env[DATABASES[db]]))
            except (subprocess.CalledProcessError, OSError):
                pass  # the database is down for a moment (fault tests): keep sampling
        if process is not None and process.poll() is not None:
            break
        if process is None and time.monotonic() - started >= args.seconds:
            break
        time.sleep(1)
    wall = time.monotonic() - started
    print(f"\nPostgreSQL CPU by client over {wall:.0f} s (cores = CPU s / wall s)")
    for db in DATABASES:
        spent = defaultdict(float)
        for pid, cpu in last[db].items():
            spent[who[db].get(pid, "exited or unnamed")] += cpu - first[db].get(pid, 0.0)
        total = sum(spent.values())
        print(f"{db}: {total:.1f} CPU s, {total / wall:.2f} cores")
        for name, cpu in sorted(spent.items(), key=lambda kv: -kv[1]):
            if cpu >= 0.05:
                print(f"  {name:<32} {cpu:7.1f} s  {cpu / wall:5.2f} cores  {100 * cpu / max(total, 1e-9):4.0f}%")
    sys.exit(process.returncode if process is not None else 0)


if __name__ == "__main__":
    main()
