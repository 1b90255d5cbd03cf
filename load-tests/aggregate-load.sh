#!/usr/bin/env bash
# Benchmark: loading a warrior with 1,000 events, with and without snapshots.
# Needs the event-store PostgreSQL (`./dev infra` or `./dev up`).
set -euo pipefail
cd "$(dirname "$0")/.."
./dev infra >/dev/null
exec cargo bench --quiet -p command-service --bench aggregate_load
