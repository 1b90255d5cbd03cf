#!/usr/bin/env python3
"""The Gatling benchmark of record: one command, one dated section in
docs/BENCHMARKS.md.

    load-tests/benchmark.sh [full|short|peak] # the wrapper: plotting venv, then this

1. `./dev up` (a running stack is fine); notes the start (UTC and the read
   model's now()).
2. Samples every part of the stack each second from /proc while Gatling runs
   (memory and CPU; see TREE_PARTS and Sampler), and Gatling itself, and
   each PostgreSQL's backends by client (pg_cpu.py).
3. Runs `load-tests/gatling.sh <profile>`, its output shown as it comes.
4. Projection lag: p50/p95/p99/max of projected_at − updated_at over the read
   model's rows written since the start.
5. Appends to docs/BENCHMARKS.md: machine, commit, PASSED/FAILED, per-request
   figures from the HTML report (gatling/summary.py), the count check, the
   lag, memory and CPU per part, and a PNG of the latency percentiles over
   time (docs/benchmarks/gatling-<profile>-<YYYYmmdd-HHMM>.png, drawn from the
   series in Gatling's index.html) with the report's local path.
Exits with gatling.sh's status (non-zero when the run failed); the section is
appended either way. Ctrl-C appends nothing.

Dry run, for tests: `benchmark.py --dry-run REPORT_DIR [--output /tmp/b.md
--png-dir /tmp]` skips `./dev up` and Gatling, takes the figures from an
existing report (and the count check from its console log in results/, when
found), samples the running parts for --sample-seconds (default 5, read only:
no VmHWM reset) and measures the lag only with --lag-since TIMESTAMP.
"""

import argparse
import io
import json
import math
import os
import re
import resource
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "gatling"))

import benchlib  # noqa: E402
from benchlib import psql  # noqa: E402
import summary  # noqa: E402  (gatling/summary.py)
from pg_cpu import PgCpu, table as pg_cpu_table  # noqa: E402

ROOT = benchlib.ROOT
PIDS = ROOT / ".state" / "pids"
RESULTS = HERE / "results"
CLK = os.sysconf("SC_CLK_TCK")

# Parts whose pid file names a process tree (a master and children that come
# and go): memory is the sum of Pss over the tree. The others (services and
# their replicas, Kafka) are one process each: memory is its VmHWM.
TREE_PARTS = {"nginx", "eventstore-db", "readmodel-db"}
PART_ORDER = ["command-service", "query-service", "nginx", "eventstore-db", "readmodel-db", "kafka"]
GATLING = "gatling"  # the load generator: gatling.sh, Maven and the simulation JVM
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------------------
# /proc
# ---------------------------------------------------------------------------
def proc_stat(pid):
    """(ppid, own CPU ticks, reaped children's CPU ticks), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def all_parents():
    """{pid: ppid} of every process."""
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = proc_stat(entry.name)
            if stat:
                parents[int(entry.name)] = stat[0]
    return parents


def descendants(root, parents):
    """root and every process below it (root first)."""
    children = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def status_kb(pid, key):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def pss_kb(pid):
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:  # gone, or not ours to read
        pass
    return None


def stack_parts():
    """{part: pid} from .state/pids, parts that run."""
    parts = {}
    for pid_file in sorted(PIDS.glob("*.pid")) if PIDS.is_dir() else []:
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if Path(f"/proc/{pid}").exists():
            parts[pid_file.stem] = pid
    order = {name: i for i, name in enumerate(PART_ORDER)}
    return dict(sorted(parts.items(), key=lambda kv: (order.get(re.sub(r"-\d+$", "", kv[0]), 99), kv[0])))


def is_tree(part):
    return part in TREE_PARTS or part == GATLING


def reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (Linux 4.0+), so a stack that was
    already running reports this run's peak, not its lifetime's."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Sampler(threading.Thread):
    """Every `interval` seconds, for each part: CPU ticks (utime+stime of the
    process or tree, plus cutime+cstime, i.e. children that exited and were
    reaped) and, for a single process, VmRSS. The sum of Pss over a tree
    (/proc/<pid>/smaps_rollup) costs about 1.5 ms of kernel time per
    PostgreSQL backend (it walks the page tables of shared_buffers), so it is
    read every second only while that stays under PSS_BUDGET of one core;
    beyond, less often (the interval is reported). Keeps each part's peaks
    and one row of CPU totals per tick."""

    PSS_BUDGET = 0.02

    def __init__(self, parts, interval=1.0):
        super().__init__(daemon=True)
        self.parts, self.interval = dict(parts), interval
        self.stop_event = threading.Event()
        self.ticks = []  # (time, {part: cpu seconds}, machine busy seconds)
        self.peak_kb = {p: 0 for p in parts}
        self.procs = {p: [math.inf, 0] for p in parts}  # min, max processes seen
        self.last_cpu = {}
        self.unreadable = set()
        self.pss_due, self.pss_sweeps, self.pss_cost = 0.0, 0, 0.0

    def sample(self, force_pss=False):
        now = time.time()
        parents = all_parents()
        sweep = force_pss or now >= self.pss_due
        sweep_started = time.thread_time()
        cpu = {}
        for part, root in self.parts.items():
            pids = descendants(root, parents) if is_tree(part) and root in parents else [root]
            total, mem, alive = 0, 0, 0
            for pid in reversed(pids):  # children before their parent
                stat = proc_stat(pid)
                if stat is None:
                    continue
                alive += 1
                total += stat[1] + stat[2]
                if not is_tree(part):
                    mem += status_kb(pid, "VmRSS") or 0
                elif sweep:
                    kb = pss_kb(pid)
                    if kb is None:
                        self.unreadable.add(part)
                    mem += kb or 0
            if alive == 0:  # gone (gatling.sh done): keep its last figure
                cpu[part] = self.last_cpu.get(part, 0.0)
                continue
            cpu[part] = self.last_cpu[part] = total / CLK
            if sweep or not is_tree(part):
                self.peak_kb[part] = max(self.peak_kb[part], mem)
            low, high = self.procs[part]
            self.procs[part] = [min(low, alive), max(high, alive)]
        if sweep:
            cost = time.thread_time() - sweep_started
            self.pss_sweeps += 1
            self.pss_cost += cost
            self.pss_due = now + max(self.interval, cost / self.PSS_BUDGET) - 0.05
        self.ticks.append((now, cpu, benchlib.machine_busy_seconds()))

    def pss_interval(self):
        """Average seconds between two Pss sweeps."""
        if self.pss_sweeps < 2 or len(self.ticks) < 2:
            return self.interval
        return (self.ticks[-1][0] - self.ticks[0][0]) / (self.pss_sweeps - 1)

    def run(self):
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                self.sample()
            except Exception as e:  # noqa: BLE001 (a lost sample must not end the sampling)
                print(f"benchmark: sampler: {e!r}", file=sys.stderr)
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def finish(self):
        """Stops sampling (one last sample) and returns {part: VmHWM kB} of
        the single processes."""
        self.stop_event.set()
        self.join()
        self.sample(force_pss=True)
        hwm = {}
        for part, pid in self.parts.items():
            if not is_tree(part):
                kb = status_kb(pid, "VmHWM")
                if kb is not None:
                    hwm[part] = kb
        return hwm


def cpu_between(ticks, part, start, end):
    """CPU seconds of a part between two times, interpolated between ticks."""

    def at(t):
        points = [(tick[0], tick[1].get(part)) for tick in ticks]
        points = [(x, y) for x, y in points if y is not None]
        if not points:
            return None
        if t <= points[0][0]:
            return points[0][1]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            if x0 <= t <= x1:
                return y0 + (y1 - y0) * (t - x0) / (x1 - x0) if x1 > x0 else y1
        return points[-1][1]

    a, b = at(start), at(end)
    return None if a is None or b is None else b - a


def machine_between(ticks, start, end):
    """Average cores the whole machine used between the ticks nearest to
    two times."""

    def at(t):
        best = min(ticks, key=lambda tick: abs(tick[0] - t))
        return best[2], best[0]

    (a, ta), (b, tb) = at(start), at(end)
    return (b - a) / (tb - ta) if tb > ta else None


def busiest(ticks, part, window=10.0):
    """Highest average cores of a part over any `window` seconds."""
    best = None
    points = [(tick[0], tick[1].get(part)) for tick in ticks]
    points = [(x, y) for x, y in points if y is not None]
    j = 0
    for t0, c0 in points:
        while j < len(points) and points[j][0] < t0 + window:
            j += 1
        if j >= len(points):
            break
        t1, c1 = points[j]
        rate = (c1 - c0) / (t1 - t0)
        best = rate if best is None else max(best, rate)
    return best


# ---------------------------------------------------------------------------
# Gatling's report
# ---------------------------------------------------------------------------
CHART = re.compile(r"new\s+Highcharts\.(?:StockChart|Chart)\s*\(")
SERIES_NAME = re.compile(r"""name\s*:\s*(['"])(.*?)\1\s*,\s*data\s*:\s*\[""", re.S)
POINT = re.compile(r"\[\s*(\d{10,})\s*,\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|null)\s*\]")


def _closing_bracket(text, start):
    """Index just past the ']' that closes the '[' at text[start - 1]."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "[":
            depth += 1
        elif text[i] == "]":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def read_charts(report):
    """{chart: {series name: [(epoch ms, value or nan)]}} from the Highcharts
    calls in a Gatling 3.x index.html. Charts are keyed by their title (tags
    stripped) and by their container id, whichever is found; only series whose
    data are [timestamp, value] pairs are kept."""
    text = (Path(report) / "index.html").read_text(encoding="utf-8")
    starts = [m.start() for m in CHART.finditer(text)] + [len(text)]
    charts = {}
    for begin, end in zip(starts, starts[1:]):
        block = text[begin:end]
        series = {}
        for m in SERIES_NAME.finditer(block):
            data = block[m.end() : _closing_bracket(block, m.end())]
            points = [(int(t), math.nan if v == "null" else float(v)) for t, v in POINT.findall(data)]
            if points:
                series[m.group(2)] = points
        if not series:
            continue
        title = re.search(r"title\s*:\s*\{\s*text\s*:\s*(['\"])(.*?)\1", block, re.S)
        container = re.search(r"renderTo\s*:\s*(['\"])(.*?)\1", block)
        for key in (title and re.sub(r"<[^>]*>", "", title.group(2)).strip(), container and container.group(2)):
            if key:
                charts[key] = series
    return charts


def find_chart(charts, *patterns):
    for pattern in patterns:
        for key, series in charts.items():
            if re.search(pattern, key, re.I):
                return series
    return {}


def gatling_series(report):
    """The series the plot and the report use: latency percentiles of OK
    responses ({'50%': [...], ...}), requests/s, responses/s (OK, KO), users
    started/s. Missing charts come back empty."""
    charts = read_charts(report)
    return {
        "percentiles": find_chart(charts, r"percentiles over time", r"^ResponseTimeContainerId$"),
        "requests": find_chart(charts, r"number of requests per second", r"^RequestsContainerId$"),
        "responses": find_chart(charts, r"number of responses per second", r"^ResponsesContainerId$"),
        "users": find_chart(charts, r"users started per second", r"^UserStartRateContainerId$"),
    }


def series_span(series):
    """(first, last) epoch seconds of the requests/s series, or None."""
    points = [t for s in series["requests"].values() for t, _ in s] or [
        t for s in series["percentiles"].values() for t, _ in s
    ]
    return (min(points) / 1000, max(points) / 1000 + 1) if points else None


def pick(series, *names):
    for name in names:
        if name in series:
            return series[name]
    return None


# ---------------------------------------------------------------------------
# The plot
# ---------------------------------------------------------------------------
PLOT_PERCENTILES = [("50%", "p50", "#2b83ba"), ("95%", "p95", "#fdae61"), ("99%", "p99", "#d7191c"), ("max", "max", "#555555")]
PART_COLOURS = {
    "command-service": "#1f78b4",
    "query-service": "#a6cee3",
    "nginx": "#33a02c",
    "eventstore-db": "#e31a1c",
    "readmodel-db": "#fb9a99",
    "kafka": "#ff7f00",
    GATLING: "#6a3d9a",
    "other": "#bbbbbb",
}


def cores_series(ticks, parts, smooth=5):
    """(times, {part or 'other': cores}) per tick interval, each a moving
    average over `smooth` intervals; 'other' is the machine's busy time not
    in any part."""
    times, per = [], {p: [] for p in [*parts, "other"]}
    for (t0, c0, m0), (t1, c1, m1) in zip(ticks, ticks[1:]):
        dt = t1 - t0
        if dt <= 0:
            continue
        times.append((t0 + t1) / 2)
        used = 0.0
        for p in parts:
            rate = max(0.0, (c1.get(p, 0.0) - c0.get(p, 0.0)) / dt)
            per[p].append(rate)
            used += rate
        per["other"].append(max(0.0, (m1 - m0) / dt - used))
    if smooth > 1:
        for p, values in per.items():
            per[p] = [sum(values[max(0, i - smooth + 1) : i + 1]) / len(values[max(0, i - smooth + 1) : i + 1]) for i in range(len(values))]
    return times, per


def plot(series, out, title, ticks=None, parts=()):
    """Latency percentiles over time (log scale), request rate, and cores per
    part when the sampler's ticks overlap the run. Returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    span = series_span(series)
    if span is None:
        raise ValueError("the report has no time series")
    t0 = span[0]
    cpu = None
    if ticks and len(ticks) > 2 and ticks[0][0] < span[1] and ticks[-1][0] > span[0]:
        cpu = cores_series(ticks, list(parts))
    rows = 3 if cpu else 2
    fig, axes = plt.subplots(rows, 1, figsize=(10, 8.4 if cpu else 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 2, 2][:rows]})
    ax = axes[0]
    for key, label, colour in PLOT_PERCENTILES:
        points = pick(series["percentiles"], key)
        if points:
            ax.plot([t / 1000 - t0 for t, _ in points], [max(v, 0.5) for _, v in points], label=label, color=colour, linewidth=0.9)
    ax.set_yscale("log")
    ax.set_ylabel("response time, ms (log; 0 drawn at 0.5)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncol=4, title="OK responses of each second", title_fontsize=8)

    ax = axes[1]
    for name, label, colour, style in [
        (("All",), "requests/s", "#1f78b4", "-"),
        (("KO",), "KO responses/s", "#e31a1c", "-"),
    ]:
        points = pick(series["requests"] if label == "requests/s" else series["responses"], *name)
        if points and (label != "KO responses/s" or any(v > 0 for _, v in points)):
            ax.plot([t / 1000 - t0 for t, _ in points], [v for _, v in points], label=label, color=colour, linewidth=0.9, linestyle=style)
    users = pick(series["users"], "All users")
    if users:
        ax.plot([t / 1000 - t0 for t, _ in users], [v for _, v in users], label="users started/s", color="#33a02c", linewidth=0.8, linestyle="--")
    ax.set_ylabel("per second")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)

    if cpu:
        ax = axes[2]
        times, per = cpu
        keys = [p for p in [*parts, "other"] if any(per[p])]
        base = re.compile(r"-\d+$")
        ax.stackplot(
            [t - t0 for t in times],
            [per[p] for p in keys],
            labels=keys,
            colors=[PART_COLOURS.get(base.sub("", p), "#999999") for p in keys],
            linewidth=0,
        )
        ax.axhline(os.cpu_count(), color="black", linewidth=0.8, linestyle=":")
        ax.text(0.995, os.cpu_count(), f"{os.cpu_count()} cores", transform=ax.get_yaxis_transform(), ha="right", va="bottom", fontsize=7)
        ax.set_ylabel("cores used (5 s avg)")
        ax.set_ylim(0, os.cpu_count() * 1.5)  # room for the legend above the machine's cores
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=7, ncol=4)
    axes[-1].set_xlabel(f"seconds since the first request ({datetime.fromtimestamp(t0, timezone.utc):%H:%M:%S} UTC)")
    axes[-1].set_xlim(0, span[1] - t0)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    try:  # a 128-colour palette: a third of the size, no visible loss
        from PIL import Image

        buffer.seek(0)
        Image.open(buffer).convert("RGB").quantize(colors=128).save(out, optimize=True)
    except ImportError:
        out.write_bytes(buffer.getvalue())
    return out


# ---------------------------------------------------------------------------
# The read model
# ---------------------------------------------------------------------------
def projection_lag(url, since, settle=30):
    """Percentiles of projected_at − updated_at (ms) over the rows written
    since `since` (a timestamptz literal), once their count and latest
    projection stop moving (at most `settle` seconds)."""
    since_sql = "'" + since.replace("'", "''") + "'::timestamptz"
    watch = f"SELECT count(*), max(projected_at) FROM warriors WHERE updated_at >= {since_sql}"
    previous, deadline = None, time.monotonic() + settle
    while time.monotonic() < deadline:
        now = psql(url, watch)
        if now == previous:
            break
        previous = now
        time.sleep(1)
    row = psql(
        url,
        "SELECT count(*), count(*) FILTER (WHERE projected_at IS NULL), "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY ms), "
        "percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms) "
        f"FROM (SELECT projected_at, extract(epoch FROM projected_at - updated_at) * 1000 AS ms "
        f"FROM warriors WHERE updated_at >= {since_sql}) t",
    ).split("|")
    num = [float(v) if v else math.nan for v in row[2:]]
    return {"rows": int(row[0]), "unprojected": int(row[1]), "p50": num[0], "p95": num[1], "p99": num[2], "max": num[3]}


# ---------------------------------------------------------------------------
# The markdown
# ---------------------------------------------------------------------------
def fmt_ms(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def fmt_int(text):
    try:
        return f"{int(text):,}"
    except (TypeError, ValueError):
        return text if text not in (None, "-") else "0" if text == "-" else "?"


def parts_table(res):
    """Markdown table of memory and CPU per part."""
    lines = [
        "| part | processes | peak memory MB | measured as | CPU s | avg cores during load | busiest 10 s of the load, cores |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in res["rows"]:
        lines.append(
            f"| {row['part']} | {row['procs']} | {row['mem']} | {row['measure']} | {row['cpu']} | {row['avg']} | {row['peak']} |"
        )
    return "\n".join(lines)


def resource_rows(sampler, hwm, window, parts, gatling_cpu, self_cpu, hwm_reset):
    """The rows of the parts table, and the figures behind them."""
    ticks = sampler.ticks
    start, end = ticks[0][0], ticks[-1][0]
    lo, hi = window if window else (start, end)
    lo, hi = max(lo, start), min(hi, end)
    in_load = hi - lo >= 1
    if not in_load:  # the requests' window is not in the sampled one (dry run)
        lo, hi = start, end
    rows, raw = [], {}

    def cell(v, digits=2):
        return "–" if v is None else f"{v:.{digits}f}"

    total_parts = 0.0
    for part in [*parts, GATLING]:
        if part not in sampler.parts:
            continue
        whole = cpu_between(ticks, part, start, end)
        if part == GATLING and gatling_cpu is not None:
            whole = gatling_cpu  # exact: rusage of the reaped gatling.sh tree
        load_cpu = cpu_between(ticks, part, lo, hi)
        avg = load_cpu / (hi - lo) if load_cpu is not None else None
        # Within the requests' window: the JVMs' start-up (Gatling compiling
        # its simulation) is not load, and once made Gatling look 3x busier.
        peak = busiest([tick for tick in ticks if lo <= tick[0] <= hi], part)
        low, high = sampler.procs[part]
        procs = "–" if high == 0 else str(high) if low == high or not is_tree(part) else f"{low}–{high}"
        if is_tree(part):
            mem_kb = sampler.peak_kb[part]
            measure = "Σ Pss over the tree, peak sample"
            if part in sampler.unreadable:
                measure += " (some processes unreadable)"
        else:
            mem_kb = hwm.get(part, sampler.peak_kb[part])
            measure = ("VmHWM, reset at the start" if hwm_reset.get(part) else "VmHWM (since the process started)") if part in hwm else "VmRSS, peak 1 s sample"
        label = "Gatling (gatling.sh, Maven, simulation JVM)" if part == GATLING else part
        rows.append({"part": label, "procs": procs, "mem": f"{mem_kb / 1024:.0f}", "measure": measure, "cpu": cell(whole, 1), "avg": cell(avg), "peak": cell(peak)})
        raw[part] = {"peak_kb": mem_kb, "cpu_s": whole, "avg_cores_load": avg, "busiest_10s": peak, "procs": [low, high]}
        total_parts += load_cpu or 0.0
    machine = machine_between(ticks, lo, hi)
    if machine is not None:
        other = machine - total_parts / (hi - lo)
        rows.append({"part": "everything else (other processes, this script, kernel)", "procs": "", "mem": "", "measure": "", "cpu": "", "avg": cell(max(other, 0.0)), "peak": ""})
        rows.append({"part": f"**machine** ({os.cpu_count()} cores)", "procs": "", "mem": "", "measure": "", "cpu": "", "avg": f"**{machine:.2f}**", "peak": ""})
        raw["machine_avg_cores_load"] = machine
    raw["this_script_cpu_s"] = self_cpu
    raw["pss_interval_s"] = sampler.pss_interval()
    raw["load_window"] = [lo, hi]
    return {"rows": rows, "raw": raw, "window_s": hi - lo, "sampled_s": end - start, "in_load": in_load}


def render(ctx):
    """The markdown section of one run."""
    out = []
    out.append(f"\n## Gatling {ctx['profile']} profile — {ctx['date']}\n")
    if ctx.get("dry_run"):
        out.append(
            f"_Dry run of `load-tests/benchmark.py`: figures from an existing report; the stack and Gatling were not run by it, "
            f"the resources below were sampled for {ctx['sampled_s']:.0f} s at {ctx['now']} while whatever was running ran._\n"
        )
    out.append(f"Machine: {ctx['machine']}. Commit: {ctx['commit']}.\n")
    out.append(
        f"`load-tests/benchmark.sh {ctx['profile']}`: `./dev up`, then `load-tests/gatling.sh {ctx['profile']}` through the gateway "
        f"({ctx['gateway']}), Gatling on the same machine. "
        f"Result: **{ctx['result']}** (exit {ctx['exit']})."
        + (f" gatling.sh took {ctx['wall']} (Maven, the simulation, the report)." if ctx["wall"] else "")
        + (f" Requests were sent over {ctx['span']}." if ctx["span"] else "")
        + "\n"
    )
    if ctx["stats"]:
        out.append("| request | requests | KO | p50 ms | p95 ms | p99 ms | max ms |")
        out.append("|---|---|---|---|---|---|---|")
        for name, v in ctx["stats"]:
            label = f"**{name}**" if name == "All Requests" else f"`{name}`"
            out.append(
                f"| {label} | {fmt_int(v['Total'])} | {fmt_int(v['KO'])} | {v['50th pct']} | {v['95th pct']} | {v['99th pct']} | {v['Max']} |"
            )
        out.append("")
    else:
        out.append(f"No per-request figures: {ctx['stats_error']}.\n")
    out.append(f"Count check: `{ctx['count_check']}`" + (f"; `{ctx['count_end']}`." if ctx.get("count_end") else "."))
    out.append("")
    lag = ctx["lag"]
    if isinstance(lag, dict) and lag["rows"] == 0:
        out.append("Projection lag: no row of the read model was written since the start.\n")
    elif isinstance(lag, dict):
        out.append(
            f"Projection lag (read model: `projected_at − updated_at` of the {lag['rows']:,} rows written since the start"
            + (f", {lag['unprojected']:,} not projected" if lag["unprojected"] else "")
            + f"): p50 {fmt_ms(lag['p50'])} ms, p95 {fmt_ms(lag['p95'])} ms, p99 {fmt_ms(lag['p99'])} ms, max {fmt_ms(lag['max'])} ms.\n"
        )
    else:
        out.append(f"Projection lag: {lag}.\n")
    res = ctx["resources"]
    if res:
        out.append(
            f"Memory and CPU per part, sampled from /proc every second ({res['sampled_s']:.0f} s sampled; "
            + (f"averages over the {res['window_s']:.0f} s the requests were sent):\n" if res["in_load"] else "averages over all of it):\n")
        )
        out.append(parts_table(res))
        out.append("")
        out.append(
            "Services and Kafka are single processes: their peak RSS (VmHWM). nginx and each PostgreSQL are a master "
            "and children that come and go: the highest sum of Pss over the tree "
            f"(sampled every {res['raw']['pss_interval_s']:.1f} s on average), Pss so that shared memory "
            "(PostgreSQL's shared_buffers, nginx's code) counts once, not once per backend or worker. CPU: utime+stime "
            "of the process or tree, children that exited included (cutime+cstime); cores = CPU seconds / wall seconds. "
            f"This script used {res['raw']['this_script_cpu_s']:.1f} CPU s (sampler included).\n"
        )
    else:
        out.append("Memory and CPU per part: not sampled (no running part found, or the run ended at once).\n")
    if ctx.get("pg_clients") and ctx["wall"]:
        out.append(
            "Each PostgreSQL's CPU by client (`application_name` of the backend, else its kind; "
            "`load-tests/pg_cpu.py`), over the whole run:\n"
        )
        out.append(pg_cpu_table(ctx["pg_clients"], ctx["wall_s"]))
        out.append("")
    if ctx.get("png_link"):
        out.append(f"![latencies]({ctx['png_link']})\n")
    elif ctx.get("plot_error"):
        out.append(f"No plot: {ctx['plot_error']}.\n")
    out.append(f"Gatling's HTML report (local, not committed): `{ctx['report_html']}`.\n")
    return "\n".join(out)


def append(output, section):
    output.parent.mkdir(parents=True, exist_ok=True)
    if not output.exists():
        output.write_text("# Benchmarks\n\nAppended by the scripts in `load-tests/`; newest last.\n")
    with output.open("a") as f:
        f.write(section)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------
def start_gatling(profile, env):
    """gatling.sh, its output (stderr too) piped to us, line by line."""
    return subprocess.Popen(
        [str(HERE / "gatling.sh"), profile], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env, errors="replace"
    )


def log_for_report(report):
    """gatling.sh's console log that names this report, if any."""
    name = Path(report).name
    for log in sorted(RESULTS.glob("gatling-*.log"), reverse=True):
        try:
            if name in log.read_text(errors="replace"):
                return log
        except OSError:
            pass
    return None


def last_line(lines, prefix):
    found = [ANSI.sub("", l).strip() for l in lines if ANSI.sub("", l).strip().startswith(prefix)]
    return found[-1] if found else None


def fmt_duration(seconds):
    if seconds is None:
        return "unknown"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def cpu_of(usage):
    return usage.ru_utime + usage.ru_stime


def dry_run(args):
    """The figures of an existing report; the running parts sampled for a
    few seconds (read only); the lag only if asked for."""
    report = args.dry_run.resolve()
    if not (report / "index.html").exists():
        sys.exit(f"{report}: no index.html (not a finished Gatling report)")
    log = log_for_report(report)
    guessed = re.match(r"gatling-(full|short|peak)-", log.name) if log else None
    run = {
        "profile": args.profile or (guessed.group(1) if guessed else "unknown"),
        "env": {"GATEWAY_URL": os.environ.get("GATEWAY_URL", "http://127.0.0.1:9999")},
        "report": report,
        "lines": log.read_text(errors="replace").splitlines() if log else [],
        "hwm_reset": {},
        "wall": None,
        "gatling_cpu": None,
        "lag": "not measured (dry run without --lag-since)",
    }
    self0 = cpu_of(resource.getrusage(resource.RUSAGE_SELF))
    run["sampler"] = Sampler(stack_parts())
    run["sampler"].start()
    time.sleep(args.sample_seconds)
    run["hwm"] = run["sampler"].finish()
    run["self_cpu"] = cpu_of(resource.getrusage(resource.RUSAGE_SELF)) - self0
    if args.lag_since:
        run["env"] = benchlib.dev_env()  # without ./dev up (dry run)
        run["lag"] = safe(lambda: projection_lag(run["env"]["READ_MODEL_URL"], args.lag_since), "not measured")
    stats = safe_stats(report)
    all_ko = next((v["KO"] for n, v in stats if n == "All Requests"), None)
    count_check = last_line(run["lines"], "COUNT CHECK:") or ""
    run["status"] = 0 if all_ko == "0" and count_check.endswith("-> OK") else 1
    return run


def real_run(args):
    """./dev up, then gatling.sh with the sampler going, then the lag."""
    profile = args.profile or "full"
    print(f"benchmark: ./dev up, then the Gatling {profile} profile", flush=True)
    try:
        env = benchlib.stack_env()  # ./dev up, then ./dev env
    except subprocess.CalledProcessError as e:
        sys.exit(f"benchmark: {' '.join(map(str, e.cmd))} failed (exit {e.returncode}); nothing run, nothing appended")
    now = datetime.now(timezone.utc)
    try:
        since = psql(env["READ_MODEL_URL"], "SELECT now()")  # the clock that wrote updated_at's neighbours
    except subprocess.CalledProcessError:
        since = now.isoformat()
    parts = stack_parts()
    hwm_reset = {part: reset_peak_rss(pid) for part, pid in parts.items() if not is_tree(part)}
    children0, self0 = cpu_of(resource.getrusage(resource.RUSAGE_CHILDREN)), cpu_of(resource.getrusage(resource.RUSAGE_SELF))
    started = time.monotonic()
    proc = start_gatling(profile, {**os.environ, **env})
    sampler = Sampler({**parts, GATLING: proc.pid})
    sampler.start()
    pg_cpu = PgCpu(env)
    pg_cpu.start()
    lines = []
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line.rstrip("\n"))
        status = proc.wait()
    except KeyboardInterrupt:
        proc.wait()
        sampler.finish()
        pg_cpu.finish()
        print("\nbenchmark: interrupted, nothing appended", file=sys.stderr)
        sys.exit(130)
    wall = time.monotonic() - started
    hwm = sampler.finish()
    pg_clients = pg_cpu.finish()
    reported = last_line(lines, "report:")  # gatling.sh's summary
    html = reported.split(":", 1)[1].strip() if reported else ""
    if not html:  # Gatling's own line
        found = [m for line in lines for m in re.findall(r"file://(\S+/index\.html)", line)]
        html = found[-1] if found else ""
    return {
        "profile": profile,
        "env": env,
        "now": now,
        "since": since,
        "report": Path(html).parent if html else None,
        "lines": lines,
        "sampler": sampler,
        "hwm": hwm,
        "hwm_reset": hwm_reset,
        "status": status,
        "wall": wall,
        "pg_clients": pg_clients,
        # exact, unlike the samples: rusage of the reaped gatling.sh tree
        "gatling_cpu": cpu_of(resource.getrusage(resource.RUSAGE_CHILDREN)) - children0,
        "self_cpu": cpu_of(resource.getrusage(resource.RUSAGE_SELF)) - self0,
        "lag": safe(lambda: projection_lag(env["READ_MODEL_URL"], since), "not measured"),
    }


def safe_stats(report):
    try:
        return summary.read_stats(report)
    except (OSError, ValueError):
        return []


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", nargs="?", choices=["full", "short", "peak"], help="Gatling profile (default full)")
    parser.add_argument("--output", type=Path, default=benchlib.REPORT, help="markdown file to append to (default docs/BENCHMARKS.md)")
    parser.add_argument("--png-dir", type=Path, default=ROOT / "docs" / "benchmarks", help="where the plot goes (default docs/benchmarks)")
    parser.add_argument("--dry-run", metavar="REPORT_DIR", type=Path, help="no ./dev up, no Gatling: use this existing report dir")
    parser.add_argument("--sample-seconds", type=float, default=5, help="dry run: how long to sample the running parts (default 5)")
    parser.add_argument("--lag-since", metavar="TIMESTAMP", help="dry run: measure the projection lag of rows updated since then")
    args = parser.parse_args()

    dry = args.dry_run is not None
    started = datetime.now(timezone.utc)
    run = dry_run(args) if dry else real_run(args)
    now = run.get("now", started)
    profile, report, lines, sampler, status = run["profile"], run["report"], run["lines"], run["sampler"], run["status"]
    ctx = {
        "machine": benchlib.machine(),
        "commit": benchlib.commit_description(),
        "dry_run": dry,
        "now": started.strftime("%Y-%m-%d %H:%M UTC"),
        "profile": profile,
        "gateway": run["env"].get("GATEWAY_URL", "http://127.0.0.1:9999"),
        "report_html": os.path.relpath(report / "index.html", ROOT) if report else "none (Gatling wrote no report)",
        "lag": run["lag"],
        "exit": status,
        "result": "PASSED" if status == 0 else "FAILED",
        "pg_clients": run.get("pg_clients"),
        "wall": fmt_duration(run["wall"]) if run["wall"] is not None else None,
        "wall_s": run["wall"],
        "count_check": last_line(lines, "COUNT CHECK:") or "COUNT CHECK: not run",
        "count_end": last_line(lines, "COUNT AT END:"),
        "stats": [],
    }

    series = None
    if report and (report / "index.html").exists():
        try:
            ctx["stats"] = summary.read_stats(report)
        except (OSError, ValueError) as e:
            ctx["stats_error"] = str(e)
        try:
            series = gatling_series(report)
        except OSError as e:
            ctx["plot_error"] = f"cannot read the report: {e}"
    else:
        ctx["stats_error"] = "Gatling wrote no HTML report (see its console log in load-tests/results/)"
    span = series_span(series) if series else None
    ctx["span"] = fmt_duration(span[1] - span[0]) if span else None
    when = datetime.fromtimestamp(span[0], timezone.utc) if dry and span else now  # a dry run is dated by its report
    ctx["date"] = when.strftime("%Y-%m-%d %H:%M UTC") + (" (dry run)" if dry else "")

    if len(sampler.ticks) >= 2 and sampler.ticks[-1][0] - sampler.ticks[0][0] >= 1:
        ordered = [p for p in sampler.parts if p != GATLING]
        ctx["resources"] = resource_rows(sampler, run["hwm"], span, ordered, run["gatling_cpu"], run["self_cpu"], run["hwm_reset"])
        ctx["sampled_s"] = ctx["resources"]["sampled_s"]
    else:
        ctx["resources"], ctx["sampled_s"] = None, 0

    if series:
        png = args.png_dir / f"gatling-{profile}-{when:%Y%m%d-%H%M}.png"
        try:
            title = f"Gatling {profile} profile, {ctx['date']}, commit {benchlib.commit()}: {ctx['result']}"
            plot(series, png, title, sampler.ticks, list(sampler.parts))
            ctx["png_link"] = os.path.relpath(png.resolve(), args.output.resolve().parent)
            print(f"benchmark: plot written to {png}", flush=True)
        except ImportError:
            ctx["plot_error"] = "matplotlib is missing (run through load-tests/benchmark.sh, which installs it)"
        except ValueError as e:
            ctx["plot_error"] = str(e)

    if not dry:  # the raw samples, for a closer look later (results/ is not committed)
        RESULTS.mkdir(exist_ok=True)
        raw = RESULTS / f"benchmark-{profile}-{now:%Y%m%d-%H%M%S}.json"
        figures = ctx["resources"]["raw"] if ctx["resources"] else None
        raw.write_text(
            json.dumps(
                {
                    "started_utc": now.isoformat(),
                    "read_model_since": run["since"],
                    "parts": sampler.parts,
                    "ticks": sampler.ticks,
                    "hwm_kb": run["hwm"],
                    "lag": run["lag"],
                    "report": str(report),
                    "exit": status,
                    "figures": figures,
                },
                default=str,
            )
        )
        print(f"benchmark: samples kept in {raw}", flush=True)

    section = render(ctx)
    append(args.output, section)
    sys.stdout.write(section)
    print(f"\nbenchmark: appended to {args.output}; result {ctx['result']}", flush=True)
    sys.exit(0 if status == 0 else status or 1)


def safe(fn, label):
    try:
        return fn()
    except (subprocess.CalledProcessError, OSError, ValueError, KeyError) as e:
        detail = str(e)
        if isinstance(e, subprocess.CalledProcessError) and e.stderr:
            lines = e.stderr.strip().splitlines()
            detail = next((l for l in lines if "ERROR" in l or "error" in l), lines[0]).strip()
        return f"{label} ({detail})"


if __name__ == "__main__":
    main()
