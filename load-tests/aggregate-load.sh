#!/usr/bin/env bash
# Benchmark: loading a warrior with 1,000 events, with and without snapshots.
# Starts the event-store PostgreSQL if needed (`./dev infra`), prints the
# figures and appends them, with the machine, to docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
./dev infra >/dev/null
out=$(cargo bench --quiet -p command-service --bench aggregate_load)
printf '%s\n' "$out"
BENCH_OUTPUT=$out python3 - <<'PY'
import os, sys
sys.path.insert(0, "load-tests")
import benchlib
benchlib.append_report(
    "Loading a 1,000-event warrior, snapshots on vs off",
    "`load-tests/aggregate-load.sh` (`cargo bench -p command-service --bench aggregate_load`): "
    "one warrior with 1,000 events in the event store, loaded 300 times per row by folding "
    "every event, then from its newest snapshot plus the events after it; the two ways "
    "interleaved twice in the same run.\n\n```\n" + os.environ["BENCH_OUTPUT"].strip() + "\n```\n",
)
PY
