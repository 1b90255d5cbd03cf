#!/usr/bin/env bash
# Gatling stress test of the gateway (simulation apihammer.ApiUnderStress).
#   load-tests/gatling.sh [full|short|peak]   full: ~11 min of load, short: ~2 min,
#                                             peak: the full profile's busiest minute (80 s)
# GATEWAY_URL (default http://127.0.0.1:9999) must serve the stack (`./dev up`).
# Exits non-zero if any request is KO, the warrior count does not match the
# 201s received, or Maven/Gatling failed. The console log goes to results/.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"
prepare_load_test "$@"
log=$here/results/gatling-$profile-$(date +%Y%m%d-%H%M%S).log
started=$SECONDS
(cd "$here/gatling" && mvn -B -q gatling:test -Dprofile="$profile") 2>&1 | tee "$log"
mvn_status=${PIPESTATUS[0]}
wall=$((SECONDS - started))

# Gatling prints the report's location; the simulation prints the count check.
report=$(grep -o 'file://[^ ]*/index.html' "$log" | tail -1 | sed 's|^file://||; s|/index.html$||')
count_check=$(grep -h '^COUNT CHECK:' "$log" | tail -1)

echo
echo "==== summary: $profile profile against $GATEWAY_URL, ${wall}s wall time ===="
status=0
if [[ -n $report ]]; then
  python3 "$here/gatling/summary.py" "$report" || status=1
else
  echo "no report found (see $log)"
  status=1
fi
echo "${count_check:-COUNT CHECK: not run}"
[[ $count_check == *'-> OK' ]] || status=1
((mvn_status == 0)) || { echo "maven exited with $mvn_status"; status=1; }
echo "report: ${report:+$report/index.html}"
echo "log:    $log"
echo "result: $( ((status == 0)) && echo PASSED || echo FAILED)"
exit $status
