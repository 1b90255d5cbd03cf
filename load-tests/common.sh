# Shared preamble of gatling.sh and k6/run.sh. Source it with `here` set to
# load-tests/, then call `prepare_load_test "$@"`. It sets `profile` (full, short
# or peak, else usage and exit 2), exports GATEWAY_URL (default
# http://127.0.0.1:9999), writes the feeders if missing, checks the gateway
# answers, and makes results/.
prepare_load_test() {
  profile=${1:-full}
  case $profile in full | short | peak) ;; *) echo "usage: $0 [full|short|peak]" >&2; exit 2 ;; esac
  export GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:9999}
  local resources=$here/gatling/src/test/resources
  if [[ ! -f $resources/warriors.csv || ! -f $resources/terms.csv ]]; then
    python3 "$here/feeders/generate.py" || exit 1
  fi
  curl -fsS -o /dev/null "$GATEWAY_URL/health" ||
    { echo "no gateway at $GATEWAY_URL: start the stack with ./dev up" >&2; exit 1; }
  mkdir -p "$here/results"
}
