"""Shared plumbing of the benchmark scripts: the stack's addresses, extra
service instances, wrk runs and their parsing, medians, and the report file.

Every figure is a median of several runs; alternatives (e.g. group commit on
and off) are interleaved inside each run so the machine's noise hits both.
"""

import functools
import hashlib
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "BENCHMARKS.md"


def stack_env():
    """The variables `./dev env` prints, after making sure the stack runs.
    Probes the host's speed then too (before any load), for the report."""
    subprocess.run([str(ROOT / "dev"), "up"], check=True, stdout=subprocess.DEVNULL)
    host_probe()
    return dev_env()


def service_env(part):
    """The variables ./dev starts a service part with (`./dev service-env`)."""
    out = subprocess.run([str(ROOT / "dev"), "service-env", part], check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def dev_env():
    """The variables `./dev env` prints (URLs and credentials of the stack)."""
    out = subprocess.run([str(ROOT / "dev"), "env"], check=True, capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        # Shell-quoted (the database URLs hold '?' and '&'): unquote as sh would.
        key, _, value = shlex.split(line.removeprefix("export "))[0].partition("=")
        env[key] = value
    return env


def random_create_lua(name_prefix="", extra="", pool=0, shape="small"):
    """wrk script posting warriors with random names and skills, like the
    Gatling feeder's: identical rows would make every search term hit the
    same trigrams, a distribution no real read model has.

    With `pool`, each wrk thread builds that many requests up front and
    cycles through them, as Gatling reads a feeder: building a body in Lua
    per request cost wrk ~18 µs of CPU per create against ~13 µs pooled, CPU
    the service under test then lacks on this 2-core box. For write
    benchmarks only: names repeat every `pool` creates.

    `shape` "small" (the write benchmarks' rows: 5–60 letter names, 2 of 10
    skills) or "gatling" (the Gatling feeder's valid rows: 1–100 letters and
    spaces, no skills 1 time in 14, else 1–26 of its 26 skills with repeats).
    Read benchmarks load "gatling" rows: on the small ones lookups ran ~8%
    faster and search p99 was about half of what Gatling-loaded tables give
    (docs/BENCHMARKS.md, 2026-11-27 13:35)."""
    return """
local letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ  "
local skills = {"Karate", "Judo", "Kendo", "Aikido", "Katana", "Muay Thai", "Capoeira", "Krav Maga", "Savate", "Sambo",
  "Taekwondo", "Kung Fu", "Jiu-Jitsu", "Boxing", "Wrestling", "Kali", "Silat", "Hapkido", "Wing Chun", "Kyudo",
  "Iaido", "Naginatajutsu", "Bojutsu", "Sumo", "Kickboxing", "Fencing"}
local gatling_shaped = SHAPE
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
local function word(n)
  local out = {}
  for i = 1, n do
    local k = math.random(#letters)
    out[i] = letters:sub(k, k)
  end
  return (table.concat(out):gsub("^%s+", "x"):gsub("%s+$", "x"))
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local function fight_skills()
  if not gatling_shaped then
    return string.format('["%s","%s"]', skills[math.random(10)], skills[math.random(10)])
  end
  if math.random(14) == 1 then return "null" end
  local picked = {}
  for i = 1, math.random(26) do picked[i] = '"' .. skills[math.random(#skills)] .. '"' end
  return "[" .. table.concat(picked, ",") .. "]"
end
local function make()
  -- A name holds at most 100 characters, the prefix included.
  local name = gatling_shaped and word(math.random(1, 100 - #"PREFIX")) or word(math.random(5, 60))
  local body = string.format('{"name":"%s%s","dob":"19%02d-%02d-%02d","fight_skills":%s}',
    "PREFIX", name, math.random(40, 99), math.random(1, 12), math.random(1, 28), fight_skills())
  return wrk.format(nil, nil, nil, body)
end
local pool_size = POOL
if pool_size == 0 then
  request = make
else
  -- Built in init, not as the script loads: wrk adds its Host header to
  -- wrk.headers only after loading the script, and nginx answers a request
  -- without one with a 400 (command-service does not mind).
  local pool = {}
  init = function()
    for i = 1, pool_size do pool[i] = make() end
  end
  local next_index = 0
  request = function()
    next_index = next_index % pool_size + 1
    return pool[next_index]
  end
end
""".replace("PREFIX", name_prefix).replace("POOL", str(pool)).replace(
        "SHAPE", {"small": "false", "gatling": "true"}[shape]) + extra


def psql(url, sql):
    """Runs one SQL text with psql (no .psqlrc, unaligned, tuples only, stop
    on the first error); returns its output, stripped."""
    return subprocess.run(["psql", url, "-X", "-v", "ON_ERROR_STOP=1", "-Atc", sql], check=True,
                          capture_output=True, text=True).stdout.strip()


def dev(*args, quiet=True):
    """Runs ./dev with arguments (its output hidden unless `quiet` is off)."""
    subprocess.run([str(ROOT / "dev"), *args], check=True, stdout=subprocess.DEVNULL if quiet else None)


def ensure_wrk():
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)


def wait_http(url, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {seconds}s")


class Instance:
    """An extra service process from the release binary, on its own port."""

    def __init__(self, binary, port, env):
        self.base = f"http://127.0.0.1:{port}"
        # Started as ./dev starts the service (worker threads, allocator
        # settings, ...), then with this instance's own settings over it.
        full_env = {**os.environ, **service_env(binary), **env, "LISTEN_ADDR": f"127.0.0.1:{port}", "RUST_LOG": "warn"}
        self.process = subprocess.Popen(
            [str(ROOT / "target" / "release" / binary)],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(self.base + "/health")

    def peak_rss_mb(self):
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def metric_sum_count(self, name):
        """(sum, count) of a Prometheus histogram."""
        text = urllib.request.urlopen(self.base + "/metrics", timeout=5).read().decode()
        found = {}
        for suffix in ("_sum", "_count"):
            match = re.search(rf"^{name}{suffix}(?:{{[^}}]*}})? (\S+)$", text, re.M)
            found[suffix] = float(match.group(1)) if match else 0.0
        return found["_sum"], found["_count"]

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text):
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url, connections, seconds, lua):
    """Runs wrk with a Lua script; returns req/s, p50/p99 ms, non-2xx count."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        threads = min(2, connections)
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        os.unlink(script.name)
    # wrk pads a value in seconds ("1.12s ") with a trailing space.
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if set(percentiles) != {"50", "99"}:
        raise RuntimeError(f"wrk printed no latency distribution:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": _ms(percentiles["50"]),
        "p99": _ms(percentiles["99"]),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def machine_busy_seconds():
    """CPU seconds all cores spent neither idle nor waiting for I/O, since
    boot: cores × uptime − idle − iowait. Not the sum of /proc/stat's busy
    fields: on a tickless VM (this one) those miss ticks, idle time does not."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return os.cpu_count() * uptime - (fields[3] + fields[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(threshold=0.15, seconds=60, quiet_for=3):
    """Waits (bounded) until the machine is mostly idle for `quiet_for`
    seconds in a row: autovacuum, a checkpoint or an index merge left by the
    previous step would be billed to the next one otherwise. (One quiet
    second passed in a lull between the search indexer's merges, and the
    next search run's p99 was 38-51 ms instead of 14-16.) Returns the
    seconds waited."""
    started = time.monotonic()
    quiet = 0
    while time.monotonic() < started + seconds:
        before = machine_busy_seconds()
        time.sleep(1)
        quiet = quiet + 1 if (machine_busy_seconds() - before) / os.cpu_count() < threshold else 0
        if quiet >= quiet_for:
            return time.monotonic() - started
    print("warning: the machine did not become quiet", flush=True)
    return time.monotonic() - started


def settle_databases():
    """Checkpoints both databases, then waits for a quiet machine. A
    checkpoint still spreading the previous step's writes (a catch-up of
    millions of events leaves one in each database for up to ~13 min) made
    WAL flushes wait behind it: write-path p99 at 64 connections 24-43 ms
    instead of 6-8 ms (docs/BENCHMARKS.md, 2026-11-27 17:49 and 17:58)."""
    for part in ("eventstore-db", "readmodel-db"):
        dev("psql", part, "-c", "CHECKPOINT")
    return wait_quiet(seconds=180)


def median(values):
    return statistics.median(values) if values else float("nan")


@functools.cache
def host_probe():
    """How fast this host is today, measured once per script: the same box
    (same CPU model, same kernel) ran the same build ~1.5x slower on some
    days (other guests on its cores), so a figure is comparable across runs
    only beside these two. SHA-256 on one core is raw compute; a round trip
    between two processes over pipes is two wake-ups, the cost services pay
    per request at moderate rates (a context switch dominated query-service's
    profile at ~1,000 lookups/s)."""
    data = bytes(1 << 20)
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(64):
            hashlib.sha256(data).digest()
        best = max(best, 64 / (time.perf_counter() - started))
    trips = sorted(_pipe_round_trip_us(2000) for _ in range(9))
    return f"SHA-256 {best:,.0f} MB/s on one core, pipe round trip between two processes {trips[4]:.1f} µs (median of 9)"


def _pipe_round_trip_us(rounds):
    to_child, from_parent = os.pipe()
    to_parent, from_child = os.pipe()
    pid = os.fork()
    if pid == 0:  # echo each byte back until the pipe closes
        os.close(from_parent)
        os.close(to_parent)
        while os.read(to_child, 1):
            os.write(from_child, b"x")
        os._exit(0)
    os.close(to_child)
    os.close(from_child)
    started = time.perf_counter()
    for _ in range(rounds):
        os.write(from_parent, b"x")
        os.read(to_parent, 1)
    elapsed = time.perf_counter() - started
    os.close(from_parent)
    os.waitpid(pid, 0)
    os.close(to_parent)
    return elapsed / rounds * 1e6


def machine():
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_kb / 1024 / 1024:.0f} GiB RAM, {os.uname().sysname} {os.uname().release}; "
        f"host probe: {host_probe()}"
    )


def commit():
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def commit_description():
    """The commit measured, in backticks, and whether the tree held changes
    beyond it (a report measured with uncommitted code must say so). docs/
    does not count: the reports appended there by earlier runs would."""
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"`{commit() or 'unknown'}`" + (" with uncommitted changes" if dirty else "")


def append_report(title, body):
    """Appends a dated section to docs/BENCHMARKS.md and echoes it."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = f"\n## {title} — {stamp}\n\nMachine: {machine()}. Commit: {commit_description()}.\n\n{body.rstrip()}\n"
    if not REPORT.exists():
        REPORT.write_text("# Benchmarks\n\nAppended by the scripts in `load-tests/`; newest last.\n")
    with REPORT.open("a") as report:
        report.write(section)
    sys.stdout.write(section)
