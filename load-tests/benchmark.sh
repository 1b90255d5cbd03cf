#!/usr/bin/env bash
# The Gatling benchmark of record: starts the stack (./dev up), runs
# load-tests/gatling.sh <profile> while sampling the memory and CPU of every
# part, measures the projection lag, and appends a dated section with a plot
# of the latencies over time to docs/BENCHMARKS.md (see benchmark.py).
#   load-tests/benchmark.sh [full|short|peak]     full: ~12 min, short and peak: ~2 min
#   load-tests/benchmark.sh --dry-run REPORT_DIR --output /tmp/b.md --png-dir /tmp
# Exits non-zero when the Gatling run failed; the section is appended anyway.
#
# matplotlib, pinned in load-tests/requirements-plot.txt, is installed from
# PyPI into a venv of its own (~/.cache/api-hammer/venv-plot), created once
# and re-created when that file (or python3) changes. Without it the run
# still happens and is recorded, with no plot.
set -uo pipefail

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
CACHE="${API_HAMMER_CACHE:-$HOME/.cache/api-hammer}"
VENV="$CACHE/venv-plot"
REQUIREMENTS="$here/requirements-plot.txt"

say() { printf 'benchmark: %s\n' "$*" >&2; }

case ${1:-full} in
  full | short | peak | -*) ;;   # benchmark.py checks the rest
  *) echo "usage: $0 [full|short|peak] | --dry-run REPORT_DIR [--output FILE] [--png-dir DIR] (see --help)" >&2; exit 2 ;;
esac

# The venv, created or re-created when the requirements (or python3) changed.
# Prints the python to use: the venv's, or python3 if the venv cannot be made.
ensure_venv() {
  local python stamp
  python=$(command -v python3) || { say "python3 is missing"; return 1; }
  stamp="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
  mkdir -p "$CACHE"
  exec 8>"$VENV.lock"
  flock -w 300 8 || { say "another benchmark.sh holds $VENV.lock"; echo "$python"; return 0; }
  if [[ -x $VENV/bin/python && $(cat "$VENV/.stamp" 2>/dev/null) == "$stamp" ]]; then
    echo "$VENV/bin/python"
    return 0
  fi
  say "installing matplotlib into $VENV (load-tests/requirements-plot.txt)"
  if ! "$python" -m venv --clear "$VENV" >/dev/null 2>&1; then
    # Debian's python3 lacks the venv module until python3-venv is installed.
    if ((EUID == 0)) && command -v apt-get >/dev/null; then
      say "installing python3-venv"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    "$python" -m venv --clear "$VENV" >/dev/null 2>&1 || { say "python3 -m venv failed: no plot"; echo "$python"; return 0; }
  fi
  if "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
    --only-binary=:all: -r "$REQUIREMENTS" >&2; then
    echo "$stamp" >"$VENV/.stamp"
    echo "$VENV/bin/python"
  else
    say "pip install -r $REQUIREMENTS failed: no plot"
    echo "$python"
  fi
}

python=$(ensure_venv) || exit 1
exec "$python" "$here/benchmark.py" "$@"
