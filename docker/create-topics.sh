#!/usr/bin/env bash
# One-shot of docker-compose.yml (service kafka-topics, apache/kafka image):
# creates the topics the services use, as ./dev does, then exits 0. The
# broker's healthcheck only sees its port open; kafka-topics.sh waits for
# metadata itself, and a failed attempt is retried a few times.
#
# TOPICS: "name:partitions ..." (replication factor 1: one broker).
set -euo pipefail

bootstrap=${BOOTSTRAP_SERVERS:-kafka:9092}
topics=${TOPICS:-warrior-events:3 warrior-events.dlq:1}
tool=${KAFKA_TOPICS_TOOL:-/opt/kafka/bin/kafka-topics.sh}
attempts=${ATTEMPTS:-10}

for spec in $topics; do
  name=${spec%%:*} partitions=${spec##*:}
  for ((try = 1; ; try++)); do
    if "$tool" --bootstrap-server "$bootstrap" --create --if-not-exists \
      --topic "$name" --partitions "$partitions" --replication-factor 1; then
      break
    fi
    ((try < attempts)) || { echo "create-topics: could not create $name after $attempts attempts" >&2; exit 1; }
    echo "create-topics: $name: attempt $try failed, retrying in 3 s" >&2
    sleep 3
  done
done
