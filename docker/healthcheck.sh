#!/usr/bin/env bash
# Container healthcheck of command-service and query-service, without curl in
# the image: GET /ready (database and Kafka reachable) on the port the service
# listens on (from LISTEN_ADDR), healthy on status 200. `healthcheck /health`
# checks liveness only.
set -euo pipefail

path=${1:-/ready}
port=${LISTEN_ADDR##*:}
[[ $port =~ ^[0-9]+$ ]] || { echo "healthcheck: no port in LISTEN_ADDR='${LISTEN_ADDR:-}'" >&2; exit 1; }

exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
# Status line: "HTTP/1.1 200 OK".
read -r -t 2 _ status _ <&3 || { echo "healthcheck: no answer on port $port" >&2; exit 1; }
status=${status%$'\r'}
[[ $status == 200 ]] || { echo "healthcheck: GET $path answered $status" >&2; exit 1; }
