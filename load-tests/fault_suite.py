#!/usr/bin/env python3
"""Fault suite: steady mixed load through the gateway while one part of the
stack fails at a time; afterwards nothing acknowledged may be missing.

For each fault: load runs (creates, updates of warriors created earlier,
reads) at --rate requests/s; the fault is injected; after --outage seconds
the part is brought back; load runs on for --after seconds, then stops.
Once the projection has settled (`query-service verify`), the checks:

  lost        acknowledged writes (2xx) whose warrior is missing from the read
              model or older there than the version the client was given;
  duplicates  creates that produced more than one warrior (every create has a
              unique name; the client never retries), whatever answer the
              create got: a timed-out or failed create that was committed
              twice is where a duplicate would hide;
  count       /counting-warriors equals the live warriors in the event store;
  verify      `query-service verify` reports no drift;
  expected    what must hold *during* this fault, e.g. no failed write while
              Kafka or the read model is down, and writes that fail fast
              (under --fail-fast-ms) while the event store is down; and for
              every fault, a projection that settles within --settle-max
              seconds of the load's end, writes acknowledged after the fault,
              no write failing once writes came back, and load workers that
              ran to the end (an unexpected exception in one fails the fault).

Prints one table row per fault and exits non-zero if any check failed.

    load-tests/fault_suite.py                 # every fault, ~8 minutes
    load-tests/fault_suite.py --quick         # CI's reduced form, ~2 minutes
    load-tests/fault_suite.py --faults kafka,kill-command
"""

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import dev, dev_env, psql

ROOT = Path(__file__).resolve().parent.parent
# Writes sent this long after the first successful probe create may still
# meet a connection that broke during the outage; later ones must not fail.
RECOVERY_GRACE_S = 1.0


@dataclass
class Fault:
    name: str
    description: str
    inject: list  # ./dev commands (argument lists), in order
    restore: list
    replicas: int = 1
    # What must hold during this fault.
    writes_never_fail: bool = False
    reads_never_fail: bool = False
    writes_fail_fast: bool = False


def one(*args):
    return [list(args)]


FAULTS = [
    # Lookups of writes the projection has not caught up with (no relay while
    # the only command-service is down, no Kafka, no read model) are answered
    # from the event store.
    Fault("kill-command", "kill -9 command-service", one("kill9", "command-service"), one("start", "command-service"),
          reads_never_fail=True),
    Fault("kill-query", "kill -9 query-service", one("kill9", "query-service"), one("start", "query-service"),
          writes_never_fail=True),
    Fault("kafka", "stop and restart Kafka", one("stop", "kafka"), one("start", "kafka"), writes_never_fail=True,
          reads_never_fail=True),
    Fault("eventstore-db", "stop and restart the event store's PostgreSQL", one("stop", "eventstore-db"),
          one("start", "eventstore-db"), writes_fail_fast=True),
    Fault("readmodel-db", "stop and restart the read model's PostgreSQL", one("stop", "readmodel-db"),
          one("start", "readmodel-db"), writes_never_fail=True, reads_never_fail=True),
    Fault("nginx", "stop and restart nginx", one("stop", "nginx"), one("start", "nginx")),
    # A kill -9 fails the requests the killed instance was serving (the
    # client got no acknowledgement); nginx sends the rest to the other one.
    Fault("kill-command-replica", "2 replicas each: kill -9 one command-service", one("kill9", "command-service"),
          one("start", "command-service"), replicas=2),
    # The survivor takes the killed instance's partitions after its session
    # times out (6 s); meanwhile lookups of writes on them are answered from
    # the event store.
    Fault("kill-query-replica", "2 replicas each: kill -9 one query-service", one("kill9", "query-service"),
          one("start", "query-service"), replicas=2, writes_never_fail=True, reads_never_fail=True),
    # SIGTERM drains in-flight requests: a rolling restart fails nothing.
    Fault("rolling-restart", "2 replicas each: rolling restart (SIGTERM) of every service",
          [["restart", "command-service"], ["restart", "query-service"]],
          [["restart", "command-service-2"], ["restart", "query-service-2"]],
          replicas=2, writes_never_fail=True, reads_never_fail=True),
]
QUICK = ["kill-command", "kafka", "eventstore-db", "rolling-restart"]


@dataclass
class Outcome:
    """What the load saw during one fault."""

    acked: dict = field(default_factory=dict)  # warrior id -> newest acknowledged version
    sent_names: list = field(default_factory=list)  # every create sent, whatever its answer
    created_ids: dict = field(default_factory=dict)  # name -> id acknowledged for it
    writes_ok: int = 0
    writes_failed: int = 0
    slowest_failed_write_ms: float = 0.0
    reads_ok: int = 0
    reads_failed: int = 0
    statuses: dict = field(default_factory=dict)
    failed_reads: Counter = field(default_factory=Counter)  # status (or error class) -> count
    writes: list = field(default_factory=list)  # (started, elapsed ms, ok) of every write
    worker_errors: Counter = field(default_factory=Counter)  # unexpected exceptions in the load's workers
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, ok, started, status):
        elapsed_ms = (time.monotonic() - started) * 1000
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.writes.append((started, elapsed_ms, ok))
            if ok:
                self.writes_ok += 1
                return
            self.writes_failed += 1
            self.slowest_failed_write_ms = max(self.slowest_failed_write_ms, elapsed_ms)

    def slowest_write_started_between(self, start, end):
        """Slowest write (any outcome) sent in [start, end], in ms: a write
        that waits out an outage and then succeeds did not fail fast."""
        with self.lock:
            return max((ms for at, ms, _ in self.writes if start <= at <= end), default=0.0)

    def writes_failed_after(self, moment):
        """Failed writes sent after `moment`."""
        with self.lock:
            return sum(1 for at, _, ok in self.writes if at > moment and not ok)

    def writes_failed_between(self, start, end):
        """Failed writes sent in [start, end]."""
        with self.lock:
            return sum(1 for at, _, ok in self.writes if start <= at <= end and not ok)


class Load:
    """Worker threads sending a paced mix of creates, updates and reads."""

    def __init__(self, gateway, rate, workers, run_id, timeout):
        self.host, self.port = gateway.removeprefix("http://").split(":")
        self.rate, self.workers, self.run_id, self.timeout = rate, workers, run_id, timeout
        self.outcome = Outcome()
        self.stopping = threading.Event()
        self.threads = []
        self.counter = 0

    def start(self):
        for i in range(self.workers):
            thread = threading.Thread(target=self.worker, args=(i,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def worker(self, index):
        rng = random.Random(index)
        interval = self.workers / self.rate
        next_at = time.monotonic() + rng.random() * interval
        mine = []  # (id, version) acknowledged to this worker
        conn = None
        while not self.stopping.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
            if conn is None:
                conn = http.client.HTTPConnection(self.host, int(self.port), timeout=self.timeout)
            roll = rng.random()
            try:
                if roll < 0.6 or not mine:
                    self.create(conn, index, mine)
                elif roll < 0.8:
                    self.update(conn, rng, mine)
                else:
                    self.read(conn, rng, mine)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None
            except Exception as error:  # noqa: BLE001 - a bug in the load (or a bad answer) must not end it silently
                with self.outcome.lock:
                    self.outcome.worker_errors[f"{type(error).__name__}: {error}"[:120]] += 1
                conn.close()
                conn = None

    def request(self, conn, method, path, body=None):
        headers = {"Content-Type": "application/json"} if body is not None else {}
        payload = json.dumps(body) if body is not None else None
        try:
            conn.request(method, path, body=payload, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            # nginx had closed this kept-alive connection (it does after
            # some upstream failures): the request never left, so it is
            # sent again on a new connection, as HTTP clients do. Anything
            # later (no response) is a failure, never retried.
            conn.close()
            conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.will_close:
            conn.close()
        return response.status, data

    def write(self, conn, method, path, body, ok_status):
        """Sends one write and records its outcome; returns the answer's JSON
        when it was acknowledged with `ok_status`, else None."""
        started = time.monotonic()
        try:
            status, data = self.request(conn, method, path, body)
        except (OSError, http.client.HTTPException) as error:
            self.outcome.write(False, started, type(error).__name__)
            raise
        ok = status == ok_status
        self.outcome.write(ok, started, status)
        return json.loads(data) if ok else None

    def create(self, conn, index, mine):
        with self.outcome.lock:
            self.counter += 1
            name = f"fs{self.run_id} {index} {self.counter}"
            self.outcome.sent_names.append(name)
        body = {"name": name, "dob": "1990-01-02", "fight_skills": ["Judo"]}
        warrior = self.write(conn, "POST", "/warrior", body, 201)
        if warrior:
            with self.outcome.lock:
                self.outcome.acked[warrior["id"]] = warrior["version"]
                self.outcome.created_ids[name] = warrior["id"]
            mine.append((warrior["id"], warrior["version"]))

    def update(self, conn, rng, mine):
        slot = rng.randrange(len(mine))
        warrior_id, _ = mine[slot]
        body = {"name": f"fs{self.run_id} updated {rng.random():.6f}", "dob": "1991-02-03", "fight_skills": ["Kendo"]}
        warrior = self.write(conn, "PUT", f"/warrior/{warrior_id}", body, 200)
        if warrior:
            with self.outcome.lock:
                self.outcome.acked[warrior_id] = max(warrior["version"], self.outcome.acked.get(warrior_id, 0))
            mine[slot] = (warrior_id, warrior["version"])

    def read(self, conn, rng, mine):
        warrior_id, _ = mine[rng.randrange(len(mine))]
        try:
            status, _ = self.request(conn, "GET", f"/warrior/{warrior_id}")
        except (OSError, http.client.HTTPException) as error:
            with self.outcome.lock:
                self.outcome.reads_failed += 1
                self.outcome.failed_reads[type(error).__name__] += 1
            raise
        with self.outcome.lock:
            if status == 200:
                self.outcome.reads_ok += 1
            else:
                self.outcome.reads_failed += 1
                self.outcome.failed_reads[str(status)] += 1


def settle_and_check(env, outcome, verify_wait_s):
    """Waits (bounded) until every write acknowledged under this fault is in
    the read model, and times that: the projection settling, whatever the
    size of the database (one `verify` pass alone takes ~7 s at 680k
    warriors). Then `query-service verify` for drift anywhere, and the
    other checks. Returns (lost, duplicates, count_ok, verify_ok, settle_s)."""
    rows = "\n".join(f"{i}\t{v}" for i, v in outcome.acked.items())
    started = time.monotonic()
    deadline = started + verify_wait_s
    while lost_writes(env, rows, report=False) and time.monotonic() < deadline:
        time.sleep(0.2)
    settle_s = time.monotonic() - started
    verify = subprocess.run(
        [str(ROOT / "target" / "release" / "query-service"), "verify",
         "--wait-ms", str(int(max(0.0, deadline - time.monotonic()) * 1000))],
        env={**os.environ, "DATABASE_URL": env["READ_MODEL_URL"], "EVENT_STORE_URL": env["EVENT_STORE_URL"],
             "RUST_LOG": "warn"},
        capture_output=True, text=True)
    verify_ok = verify.returncode == 0
    if not verify_ok:
        print(verify.stdout[-2000:], verify.stderr[-2000:], file=sys.stderr)

    lost = lost_writes(env, rows)
    names = "\n".join(outcome.sent_names)
    duplicates = duplicate_creates(env, names, outcome.created_ids)
    with urllib_open(env["GATEWAY_URL"] + "/counting-warriors") as response:
        counted = json.load(response)["count"]
    live = int(psql(env["EVENT_STORE_URL"], """
        SELECT count(*) FROM (SELECT DISTINCT ON (aggregate_id) event_type FROM events
                              ORDER BY aggregate_id, version DESC) newest
        WHERE event_type <> 'WarriorDeleted'"""))
    return lost, duplicates, counted == live, verify_ok, settle_s


def lost_writes(env, rows, report=True):
    """Acknowledged (id, version) rows the read model lacks or holds older;
    prints the first ten when `report`."""
    if not rows:
        return 0
    script = ("CREATE TEMP TABLE acked (id uuid, version bigint);\n"
              "\\copy acked FROM STDIN\n" + rows + "\n\\.\n"
              "SELECT a.id, a.version, w.version, w.deleted FROM acked a LEFT JOIN warriors w ON w.id = a.id "
              "WHERE w.id IS NULL OR w.deleted OR w.version < a.version;\n")
    out = subprocess.run(["psql", env["READ_MODEL_URL"], "-v", "ON_ERROR_STOP=1", "-At"], input=script, check=True,
                         capture_output=True, text=True).stdout
    rows = [line for line in out.strip().splitlines() if "|" in line]
    for line in rows[:10] if report else []:
        print(f"   lost: id|acknowledged version|read model version|deleted = {line}", file=sys.stderr)
    return len(rows)


def duplicate_creates(env, names, created_ids):
    """Creates that produced more than one warrior, among every create sent
    (acknowledged or not); prints each (a bug)."""
    if not names:
        return 0
    script = ("CREATE TEMP TABLE created (name text);\n"
              "\\copy created FROM STDIN\n" + names + "\n\\.\n"
              "SELECT e.data->>'name', string_agg(e.aggregate_id || ' ' || e.occurred_at || ' ' || "
              "coalesce(e.metadata->>'request_id', '?'), ', ') FROM events e JOIN created c ON e.data->>'name' = c.name "
              "WHERE e.event_type = 'WarriorCreated' GROUP BY 1 HAVING count(*) > 1;\n")
    out = subprocess.run(["psql", env["EVENT_STORE_URL"], "-v", "ON_ERROR_STOP=1", "-At"], input=script, check=True,
                         capture_output=True, text=True).stdout
    rows = [line for line in out.strip().splitlines() if "|" in line]
    for line in rows[:10]:
        name, events = line.split("|", 1)
        print(f"   duplicate: {name!r} acknowledged as {created_ids.get(name, 'nothing')}; created: {events}",
              file=sys.stderr)
    return len(rows)


def urllib_open(url):
    import urllib.request

    return urllib.request.urlopen(url, timeout=10)


def wait_writes_recover(gateway, deadline_s):
    """Seconds until a create through the gateway succeeds again."""
    import urllib.request

    started = time.monotonic()
    body = json.dumps({"name": "fault suite probe", "dob": "1990-01-01", "fight_skills": None}).encode()
    while time.monotonic() - started < deadline_s:
        request = urllib.request.Request(gateway + "/warrior", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 201:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    return float("inf")


def run_fault(fault, env, args, run_id):
    load = Load(env["GATEWAY_URL"], args.rate, args.workers, f"{run_id}-{fault.name}", args.request_timeout)
    load.start()
    time.sleep(args.before)
    injected = time.monotonic()
    for command in fault.inject:
        dev(*command)
    time.sleep(args.outage)
    for command in fault.restore:
        dev(*command)
    restored = time.monotonic()
    recovery_s = wait_writes_recover(env["GATEWAY_URL"], 60)
    time.sleep(args.after)
    load.stop()
    outcome = load.outcome
    lost, duplicates, count_ok, verify_ok, settle_s = settle_and_check(env, outcome, args.verify_wait)
    expectations = []
    if fault.writes_never_fail and outcome.writes_failed:
        expectations.append(f"{outcome.writes_failed} writes failed")
    if fault.reads_never_fail and outcome.reads_failed:
        expectations.append(f"{outcome.reads_failed} reads failed")
    if fault.writes_fail_fast:
        slowest = outcome.slowest_write_started_between(injected, restored)
        if slowest > args.fail_fast_ms:
            expectations.append(f"a write sent during the outage took {slowest:.0f} ms")
        if not outcome.writes_failed_between(injected, restored):
            expectations.append("no write failed while the part was down")
    if not outcome.writes_ok:
        expectations.append("no write was acknowledged")
    if outcome.worker_errors:
        expectations.append(f"load workers hit {dict(outcome.worker_errors)}")
    if recovery_s == float("inf"):
        expectations.append("writes did not recover")
    else:
        late = outcome.writes_failed_after(restored + recovery_s + RECOVERY_GRACE_S)
        if late:
            expectations.append(f"{late} writes failed after writes had come back")
    if settle_s > args.settle_max:
        expectations.append(f"the projection settled {settle_s:.0f} s after the load (limit {args.settle_max} s)")
    passed = lost == 0 and duplicates == 0 and count_ok and verify_ok and not expectations
    return {
        "fault": fault.description,
        "acked": outcome.writes_ok,
        "failed": outcome.writes_failed,
        "slowest_failed_ms": outcome.slowest_failed_write_ms,
        "reads": f"{outcome.reads_ok}/{outcome.reads_ok + outcome.reads_failed}",
        "lost": lost,
        "duplicates": duplicates,
        "count": "exact" if count_ok else "WRONG",
        "verify": "clean" if verify_ok else "DRIFT",
        "recovery_s": recovery_s,
        "outage_s": restored - injected,
        "settle_s": settle_s,
        "statuses": {str(k): v for k, v in outcome.statuses.items()},
        "failed_reads": dict(outcome.failed_reads),
        "notes": "; ".join(expectations) or "",
        "passed": passed,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"CI's reduced form: {', '.join(QUICK)}, short phases")
    parser.add_argument("--faults", help="comma-separated fault names: " + ", ".join(f.name for f in FAULTS))
    parser.add_argument("--rate", type=float, default=300, help="requests/s of the mixed load (default 300)")
    parser.add_argument("--workers", type=int, default=24)
    parser.add_argument("--before", type=float, default=5, help="seconds of load before the fault")
    parser.add_argument("--outage", type=float, default=10, help="seconds the part stays down")
    parser.add_argument("--after", type=float, default=5, help="seconds of load after writes recovered")
    parser.add_argument("--fail-fast-ms", type=float, default=3000,
                        help="slowest acceptable failed write while the event store is down")
    parser.add_argument("--request-timeout", type=float, default=15)
    parser.add_argument("--verify-wait", type=int, default=120, help="seconds to wait for the projection to settle")
    parser.add_argument("--settle-max", type=float, default=20,
                        help="seconds within which the projection must settle after the load, or the fault fails "
                             "(a consumer that paused per queued error once took 30-120 s after a Kafka restart)")
    args = parser.parse_args()
    if args.quick:
        args.before, args.outage, args.after = 2, 5, 2
    names = args.faults.split(",") if args.faults else (QUICK if args.quick else [f.name for f in FAULTS])
    unknown = set(names) - {f.name for f in FAULTS}
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    faults = [f for f in FAULTS if f.name in names]

    run_id = uuid.uuid4().hex[:6]
    results = []
    replicas = None
    for fault in faults:
        if fault.replicas != replicas:
            print(f"== ./dev up --replicas {fault.replicas}", flush=True)
            dev("up", "--replicas", str(fault.replicas))
            replicas = fault.replicas
        env = dev_env()
        print(f"== {fault.description}", flush=True)
        result = run_fault(fault, env, args, run_id)
        results.append(result)
        print(f"   {'passed' if result['passed'] else 'FAILED'}: {json.dumps({k: v for k, v in result.items() if k != 'fault'}, default=str)}",
              flush=True)
    if replicas != 1:
        dev("up", "--replicas", "1")

    print()
    print(f"Fault suite: {args.rate:.0f} req/s mixed load (60% creates, 20% updates, 20% reads) through the gateway; "
          f"{args.before:.0f} s before each fault, {args.outage:.0f} s down, {args.after:.0f} s after recovery.")
    print()
    print("| fault | writes acked | writes failed (slowest ms) | reads ok | lost | duplicates | count | verify "
          "| writes back after restore | settled after load | result |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        failed = f"{r['failed']} ({r['slowest_failed_ms']:.0f})" if r["failed"] else "0"
        print(f"| {r['fault']} | {r['acked']} | {failed} | {r['reads']} | {r['lost']} | {r['duplicates']} | "
              f"{r['count']} | {r['verify']} | {r['recovery_s']:.1f} s | {r['settle_s']:.1f} s | "
              f"{'pass' if r['passed'] else 'FAIL: ' + (r['notes'] or 'see above')} |")
    sys.exit(0 if all(r["passed"] for r in results) else 1)


if __name__ == "__main__":
    main()
