#!/usr/bin/env bash
# Property-based tests of the whole public API with Schemathesis, driven by
# the gateway's own OpenAPI document (GET /openapi.json, docs/openapi.json).
#
#   load-tests/schemathesis.sh [--quick] [extra `st run` options...]
#
# GATEWAY_URL (default http://127.0.0.1:9999) must be a running stack
# (`./dev up`). Every phase runs: the document's examples, coverage
# (boundary and invalid values, unexpected methods, missing headers), random
# fuzzing, and stateful sequences along the document's links (create, read,
# replace, delete). Every response is checked: never a 5xx; status codes,
# content types, headers and bodies as documented; invalid input rejected
# with a 4xx; 405s with a correct Allow header; a created warrior readable at
# once and a deleted one gone. Exits non-zero on any failure.
#
# --quick: few examples per operation (CI; about 30 s). Without it: many
# more (a few minutes). SEED=N repeats a run.
#
# It creates warriors (POST /warrior and /api/v1/commands/warriors): do not
# run it at the same time as the Gatling profile, whose count check needs to
# be the only writer.
#
# Which checks run, and why three do not: schemathesis.toml beside this file.
# Schemathesis comes from PyPI, pinned, into a venv under
# ~/.cache/api-hammer (installed once, reused after).
set -euo pipefail

VERSION=4.32.5
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:9999}
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/api-hammer/schemathesis-$VERSION

examples=150
if [[ ${1:-} == --quick ]]; then
  examples=20
  shift
fi

# The venv counts as installed only once pip finished (the marker), so an
# interrupted install is redone rather than half used.
if [[ ! -f $VENV/.installed ]]; then
  echo "installing schemathesis $VERSION into $VENV"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV" ||
    { echo "python3 -m venv failed (on Debian: apt-get install python3-venv)" >&2; exit 2; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
  touch "$VENV/.installed"
fi

args=(
  --url "$GATEWAY_URL"
  --wait-for-schema 30
  --workers 1
  --max-examples "$examples"
  --request-timeout 15
  --generation-database none
)
[[ -n ${SEED:-} ]] && args+=(--seed "$SEED")

# COLUMNS: the report's width when there is no terminal. The hooks give
# stateful sequences unique Idempotency-Keys (see schemathesis_hooks.py).
exec env COLUMNS="${COLUMNS:-100}" SCHEMATHESIS_HOOKS="$HERE/schemathesis_hooks.py" "$VENV/bin/st" --config-file "$HERE/schemathesis.toml" --no-color \
  run "${args[@]}" "$@" "$GATEWAY_URL/openapi.json"
