#!/usr/bin/env bash
# Local Redis on 127.0.0.1, run from Debian's redis-server with command-line
# options only (no /etc/redis config, no systemd unit).
#   infra/redis.sh up|down|status
# Env: REDIS_PORT (6379).
#   REDIS_CLUSTER=1 infra/redis.sh up|down|status
# A Redis Cluster of 3 primaries and 3 replicas instead (infra/redis-cluster.sh).
set -euo pipefail
if [[ "${REDIS_CLUSTER:-0}" == 1 ]]; then
  exec bash "$(dirname "${BASH_SOURCE[0]}")/redis-cluster.sh" "$@"
fi
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REDIS_PORT="${REDIS_PORT:-6379}"
STATE="$INFRA_STATE/redis"
PIDFILE="$STATE/redis.pid"
START_TIMEOUT=20

cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
pong() { [[ "$(cli ping 2>/dev/null)" == PONG ]]; }
our_pid() { live_pid "$PIDFILE" redis-server; }

install_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  echo "installing redis-server (apt)..."
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } >"$STATE/apt.log" 2>&1 ||
    die "could not install redis-server with apt-get — see .infra/redis/apt.log"
  # The package may start its own system instance on 6379; we want our own
  # instance (own dir, AOF, pid file) to own the port, so stop and disable it.
  { service redis-server stop || true; update-rc.d redis-server disable || true
    systemctl disable --now redis-server || true; } >/dev/null 2>&1
  local pkg_pid
  pkg_pid="$(cat /run/redis/redis-server.pid 2>/dev/null || true)"
  [[ -n "$pkg_pid" ]] && alive "$pkg_pid" && stop_pid "$pkg_pid" 10
  return 0
}

cmd_up() {
  local pid
  lock_state "$STATE"
  if pid="$(our_pid)" && pong; then
    echo "redis already running on 127.0.0.1:$REDIS_PORT (pid $pid)"
    exit 0
  fi
  [[ -z "${pid:-}" ]] && rm -f "$PIDFILE"   # stale pid file
  # Something else (e.g. a system redis) on our port: refuse rather than share it.
  if [[ -z "${pid:-}" ]] && port_open "$REDIS_PORT"; then
    die "port $REDIS_PORT on 127.0.0.1 is in use by another process (not $PIDFILE); stop it (service redis-server stop) or set REDIS_PORT"
  fi

  if [[ -z "${pid:-}" ]]; then
    install_redis
    # --save '': no RDB snapshots; durability comes from the AOF (--appendonly).
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
      --dir "$STATE" --appendonly yes --save '' \
      --daemonize yes --pidfile "$PIDFILE" --logfile "$STATE/redis.log" 9>&- ||
      die "redis-server failed to start — see .infra/redis/redis.log"
  fi

  local i
  for ((i = 0; i < START_TIMEOUT * 10; i++)); do
    if pong && pid="$(our_pid)"; then
      echo "redis $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') up on 127.0.0.1:$REDIS_PORT (pid $pid)"
      return 0
    fi
    sleep 0.1
  done
  echo "error: redis not answering PING after ${START_TIMEOUT}s; last log lines:" >&2
  tail -n 20 "$STATE/redis.log" >&2 2>/dev/null || true
  exit 1
}

cmd_down() {
  local pid
  lock_state "$STATE"
  if pid="$(our_pid)"; then
    # SHUTDOWN fsyncs the AOF before exiting; fall back to signals if it hangs.
    timeout 10 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true
    wait_exit "$pid" 10 || stop_pid "$pid" 10
    echo "redis stopped (pid $pid)"
  else
    echo "redis not running"
  fi
  rm -f "$PIDFILE"
}

cmd_status() {
  local pid
  if pid="$(our_pid)" && pong; then
    echo "redis running on 127.0.0.1:$REDIS_PORT (pid $pid)"
  else
    echo "redis not running"; exit 1
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  install) mkdir -p "$STATE"; install_redis ;;  # used by redis-cluster.sh
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
