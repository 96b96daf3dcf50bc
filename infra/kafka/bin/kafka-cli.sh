#!/usr/bin/env bash
# The Kafka command-line tools that compose/secure/acls.sh calls, run from the
# classpath infra/kafka.sh assembled: `KAFKA_BIN=infra/kafka/bin acls.sh`.
# Each tool is a link to this script, named as in Kafka's bin/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../common.sh"
case "${0##*/}" in
  kafka-acls.sh) main=org.apache.kafka.tools.AclCommand ;;
  kafka-configs.sh) main=kafka.admin.ConfigCommand ;;
  *) die "no Kafka tool is called ${0##*/}" ;;
esac
# A short-lived client: small heap, quick start (C1 only, serial GC).
exec java -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
  -cp "$INFRA_STATE/kafka/libs/*" "$main" "$@"
