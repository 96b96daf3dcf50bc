#!/usr/bin/env bash
# Runs a command with local Kafka and Redis up, and afterwards (also on Ctrl-C)
# stops whichever of them this script started; ones already running stay up.
#   infra/with-infra.sh .venv/bin/python -m ops.demo
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
started=()
for service in kafka redis; do
  if ! bash "$here/$service.sh" status >/dev/null 2>&1; then
    bash "$here/$service.sh" up || exit 1
    started+=("$service")
  fi
done
cleanup() {
  for service in "${started[@]}"; do bash "$here/$service.sh" down >/dev/null 2>&1; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$@"
