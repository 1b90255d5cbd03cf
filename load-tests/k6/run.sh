#!/usr/bin/env bash
# k6 twin of the Gatling stress test (script k6/api-under-stress.js, same profile).
#   load-tests/k6/run.sh [full|short]     full: ~11 min of load, short: ~2 min
# GATEWAY_URL (default http://127.0.0.1:9999) must serve the stack (`./dev up`).
# Needs k6 on PATH (exit 2 if missing). Exits non-zero if k6 failed (a threshold:
# a failed check, an unexpected status, a dropped iteration) or the warrior count
# does not match the 201s received. The console log goes to results/.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd) # load-tests/
source "$here/common.sh"

# common.sh also accepts peak, which api-under-stress.js does not implement.
case ${1:-full} in
  full | short) ;;
  peak) echo "the peak profile exists only in Gatling: load-tests/gatling.sh peak" >&2; exit 2 ;;
  *) echo "usage: $0 [full|short]" >&2; exit 2 ;;
esac

if ! command -v k6 >/dev/null 2>&1; then
  cat >&2 <<'EOF'
k6 is not on PATH. Get it, where policy allows (k6 is AGPL-3.0), from either:
  * an official release binary: https://github.com/grafana/k6/releases
    (unpack the archive for your platform and put `k6` on PATH), or
  * with Go: go install go.k6.io/k6@latest   (installs into $(go env GOPATH)/bin)
Without k6, run the Gatling twin: load-tests/gatling.sh
EOF
  exit 2
fi

prepare_load_test "$@"
stem=$here/results/k6-$profile-$(date +%Y%m%d-%H%M%S)
log=$stem.log
started=$SECONDS
k6 run -e PROFILE="$profile" -e GATEWAY_URL="$GATEWAY_URL" -e SUMMARY_JSON="$stem.json" \
  "$here/k6/api-under-stress.js" 2>&1 | tee "$log"
k6_status=${PIPESTATUS[0]}
wall=$((SECONDS - started))

# The script's handleSummary prints the count check (k6 cannot fail the run on it).
count_check=$(grep -h '^COUNT CHECK:' "$log" | tail -1)

echo
echo "==== summary: $profile profile against $GATEWAY_URL, ${wall}s wall time ===="
status=0
echo "${count_check:-COUNT CHECK: not run}"
[[ $count_check == *'-> OK' ]] || status=1
((k6_status == 0)) || { echo "k6 exited with $k6_status (99 = a threshold failed)"; status=1; }
echo "data:   $([[ -f $stem.json ]] && echo "$stem.json" || echo none)"
echo "log:    $log"
echo "result: $( ((status == 0)) && echo PASSED || echo FAILED)"
exit $status
