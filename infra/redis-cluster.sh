#!/usr/bin/env bash
# A local Redis Cluster on 127.0.0.1: 3 primaries and 3 replicas from Debian's
# redis-server, command-line options only, state under .infra/redis-cluster.
#   REDIS_CLUSTER=1 infra/redis.sh up|down|status   (or this script directly)
# Env: REDIS_CLUSTER_BASE (17000): nodes on BASE..BASE+5;
#      REDIS_CLUSTER_BUS_OFFSET (10): each node's cluster bus on its port + offset
#      (Redis's own default is +10000; a small offset keeps the whole cluster in one
#      narrow port range, which shared test machines hand out).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BASE="${REDIS_CLUSTER_BASE:-17000}"
BUS_OFFSET="${REDIS_CLUSTER_BUS_OFFSET:-10}"
NODES=6
STATE="$INFRA_STATE/redis-cluster"
START_TIMEOUT=30

ports() { local i; for ((i = 0; i < NODES; i++)); do echo $((BASE + i)); done; }
cli() { local port="$1"; shift; redis-cli -h 127.0.0.1 -p "$port" "$@"; }
pong() { [[ "$(cli "$1" ping 2>/dev/null)" == PONG ]]; }
node_pid() { live_pid "$STATE/$1/redis.pid" redis-server; }
# Every node says cluster_state:ok, so a client may talk to any of them.
cluster_ok() {
  local port
  for port in $(ports); do
    cli "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
}

# Every replica has finished its first sync: before that, a write's WAIT finds no
# replica and the step is refused (NotReplicated), so `up` is not done until then.
replicas_linked() {
  local port info
  for port in $(ports); do
    info="$(cli "$port" info replication 2>/dev/null)" || return 1
    grep -q '^role:slave' <<<"$info" || continue
    grep -q '^master_link_status:up' <<<"$info" || return 1
  done
}

cmd_up() {
  local port pid fresh=0
  lock_state "$STATE"
  command -v redis-server >/dev/null || REDIS_CLUSTER=0 bash "$(dirname "${BASH_SOURCE[0]}")/redis.sh" install
  for port in $(ports); do
    if pid="$(node_pid "$port")"; then continue; fi
    rm -f "$STATE/$port/redis.pid"
    port_open "$port" && die "port $port on 127.0.0.1 is in use by another process; set REDIS_CLUSTER_BASE"
    port_open $((port + BUS_OFFSET)) &&
      die "bus port $((port + BUS_OFFSET)) is in use by another process; set REDIS_CLUSTER_BUS_OFFSET"
    mkdir -p "$STATE/$port"
    # nodes.conf is the node's own record of the cluster: a restart rejoins it.
    [[ -s "$STATE/$port/nodes.conf" ]] || fresh=1
    redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
      --cluster-port $((port + BUS_OFFSET)) --cluster-config-file nodes.conf \
      --cluster-node-timeout 2000 --appendonly yes --save '' \
      --dir "$STATE/$port" --daemonize yes --pidfile "$STATE/$port/redis.pid" \
      --logfile "$STATE/$port/redis.log" 9>&- ||
      die "redis-server on $port failed to start — see .infra/redis-cluster/$port/redis.log"
  done
  local i
  for port in $(ports); do
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do pong "$port" && break; sleep 0.1; done
    pong "$port" || die "node $port not answering; see .infra/redis-cluster/$port/redis.log"
  done
  if ((fresh)); then
    # Slots are assigned once; later `up`s restart nodes that already know the cluster.
    # shellcheck disable=SC2046
    redis-cli --cluster create $(ports | sed 's/^/127.0.0.1:/') \
      --cluster-replicas 1 --cluster-yes >"$STATE/create.log" 2>&1 ||
      die "redis-cli --cluster create failed — see .infra/redis-cluster/create.log"
  fi
  for ((i = 0; i < START_TIMEOUT * 10; i++)); do
    if cluster_ok && replicas_linked; then
      echo "redis cluster up on 127.0.0.1:$BASE-$((BASE + NODES - 1)) (3 primaries, 3 replicas)"
      return 0
    fi
    sleep 0.1
  done
  echo "error: cluster_state not ok or a replica not linked after ${START_TIMEOUT}s:" >&2
  cli "$BASE" cluster info >&2 2>/dev/null || true
  exit 1
}

cmd_down() {
  local port pid
  lock_state "$STATE"
  for port in $(ports); do
    if pid="$(node_pid "$port")"; then
      # SHUTDOWN fsyncs the AOF; signals if it hangs.
      timeout 10 redis-cli -h 127.0.0.1 -p "$port" shutdown >/dev/null 2>&1 || true
      wait_exit "$pid" 10 || stop_pid "$pid" 10
    fi
    rm -f "$STATE/$port/redis.pid"
  done
  echo "redis cluster stopped"
}

cmd_status() {
  if cluster_ok; then
    echo "redis cluster running on 127.0.0.1:$BASE-$((BASE + NODES - 1))"
    cli "$BASE" cluster nodes | awk '{print "  " $2, $3}'
  else
    echo "redis cluster not running (or not ok)"; exit 1
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: REDIS_CLUSTER=1 $0 up|down|status" >&2; exit 2 ;;
esac
