#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, broker+controller) on 127.0.0.1.
#   infra/kafka.sh up|down|status|logs [-f]
# Jars come from Maven Central (infra/kafka/pom.xml) instead of a tarball/Docker.
# Env: KAFKA_VERSION (4.1.1), KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093),
#      KAFKA_START_TIMEOUT (60 s), KAFKA_HEAP_OPTS (-Xms256m -Xmx512m).
# KAFKA_SECURE=1: the secured broker of compose/secure.yml instead, run from its
# compose/secure/server.properties (SASL/SCRAM, ACLs; admin password
# KAP_ADMIN_PASSWORD, default admin-secret), with its own state in
# .infra/kafka-secure and ports 19094 (controller 19095).
# KAFKA_TLS=1: a broker with TLS listeners instead, rendered from
# infra/kafka/tls.properties.template with a CA and broker certificate it makes with
# openssl (.infra/kafka-tls/certs/ca.pem is the CA file clients need): TLS only on
# KAFKA_PORT (19096), SASL_SSL on KAFKA_SASL_PORT (port + 1) with SCRAM-SHA-512,
# SCRAM-SHA-256 and PLAIN for user KAFKA_TLS_USER (kap) with password
# KAFKA_TLS_PASSWORD (kap-tls-secret, letters and digits only), controller on
# KAFKA_CONTROLLER_PORT (port + 2). Certificates and SCRAM users are made once
# (`rm -rf .infra/kafka-tls` to start over).
# KAFKA_NODES=3: a quorum of three combined broker/controller nodes instead, each
# rendered from infra/kafka/cluster.properties.template (replication 3, min in-sync 2)
# with its state in .infra/kafka-cluster/node-N; node N listens on
# KAFKA_PORT + 2(N-1) (default base 29092) and its controller on the port after.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SECURE="${KAFKA_SECURE:-0}"
TLS="${KAFKA_TLS:-0}"
NODES="${KAFKA_NODES:-1}"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"   # seconds; raise on very slow machines
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"

CONF="$REPO_ROOT/infra/kafka"
JARS="$INFRA_STATE/kafka"        # the classpath cache, shared by both brokers
LIBS="$JARS/libs"
[[ "$NODES" =~ ^[0-9]+$ ]] && ((NODES == 1 || NODES >= 3)) ||
  die "KAFKA_NODES must be 1 or at least 3 (a quorum that survives losing a node), not '$NODES'"
[[ "$SECURE" == 1 && "$NODES" != 1 ]] && die "KAFKA_SECURE=1 runs one broker; unset KAFKA_NODES"
[[ "$TLS" == 1 && ("$NODES" != 1 || "$SECURE" == 1) ]] &&
  die "KAFKA_TLS=1 runs one broker of its own; unset KAFKA_NODES and KAFKA_SECURE"
if [[ "$SECURE" == 1 ]]; then
  KAFKA_PORT="${KAFKA_PORT:-19094}"
  KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19095}"
  STATE="$INFRA_STATE/kafka-secure"
  NAME="secure kafka (SASL/SCRAM)"
elif [[ "$TLS" == 1 ]]; then
  KAFKA_PORT="${KAFKA_PORT:-19096}"
  KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-$((KAFKA_PORT + 1))}"
  KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 2))}"
  STATE="$INFRA_STATE/kafka-tls"
  NAME="tls kafka (SSL :$KAFKA_PORT, SASL_SSL :$KAFKA_SASL_PORT)"
elif ((NODES > 1)); then
  CLUSTER_BASE_PORT="${KAFKA_PORT:-29092}"   # node N: this + 2(N-1), controller the next
  CLUSTER_STATE="${KAFKA_CLUSTER_STATE:-$INFRA_STATE/kafka-cluster}"  # tests keep theirs apart
  STATE="$CLUSTER_STATE"                      # select_node points these at one node
else
  KAFKA_PORT="${KAFKA_PORT:-9092}"
  KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
  STATE="$INFRA_STATE/kafka"
  NAME="kafka"
fi
DATA="$STATE/data"
LOG="$STATE/kafka.log"
PIDFILE="$STATE/kafka.pid"
MAIN_CLASS="kafka.Kafka"
CONFIG="$STATE/server.properties"
SCRAM=()   # --add-scram arguments of the storage format (secure only)
SHARED_CLUSTER_ID=""   # the cluster's nodes must all be formatted with one id
DOWN_HINT="\`$0 down\`"
((NODES > 1)) && DOWN_HINT="\`KAFKA_NODES=$NODES $0 down\`"

require_java() {
  local spec=""
  command -v java >/dev/null &&
    spec="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/.*java.specification.version = //p')"
  [[ "${spec%%.*}" =~ ^[0-9]+$ ]] && ((${spec%%.*} >= 17)) ||
    die "Java 17+ is required to run local Kafka (install: apt-get install -y openjdk-17-jre-headless)"
}

# Fetch the classpath once; again when the version or infra/kafka/pom.xml
# changes (the stamp records both), so an older cache gains new jars.
fetch_jars() {
  local stamp
  stamp="$KAFKA_VERSION $(sha256sum <"$CONF/pom.xml" | cut -d' ' -f1)"
  [[ "$(cat "$LIBS/.fetched" 2>/dev/null)" == "$stamp" ]] && return 0
  command -v mvn >/dev/null ||
    die "Maven is required to download the Kafka jars (install: apt-get install -y maven)"
  mkdir -p "$JARS"
  # Both brokers share the cache: one download at a time, rechecked once ours.
  exec 8>"$JARS/.fetch.lock"
  flock -w 300 8 || die "timed out waiting for $JARS/.fetch.lock"
  if [[ "$(cat "$LIBS/.fetched" 2>/dev/null)" != "$stamp" ]]; then
    echo "downloading Kafka $KAFKA_VERSION jars from Maven Central..."
    # Download into a temp dir first, so a failed download changes nothing.
    rm -rf "$LIBS.tmp"
    mvn -B -Dstyle.color=never -f "$CONF/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$LIBS.tmp" >"$JARS/mvn.log" 2>&1 ||
      die "could not download Kafka jars from Maven Central (network?) — see .infra/kafka/mvn.log"
    # Then drop the jars no longer wanted and rename the new ones in, the stamp
    # last: an interrupted update is redone, and a broker already running from
    # here (same version) still finds each jar it has not opened yet.
    mkdir -p "$LIBS"
    for jar in "$LIBS"/*.jar; do [[ -e "$LIBS.tmp/${jar##*/}" ]] || rm -f "$jar"; done
    mv -f "$LIBS.tmp"/*.jar "$LIBS/"
    rmdir "$LIBS.tmp"
    echo "$stamp" >"$LIBS/.fetched"
  fi
  exec 8>&-
}

java_cmd() { java -cp "$LIBS/*" "$@"; }

render_config() {
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
      -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
      -e "s|@DATA_DIR@|$DATA|g" \
      "$CONF/server.properties.template" >"$CONFIG"
}

# The secured broker runs compose/secure/server.properties as compose does; this
# environment says where (compose sets the same variables on its nodes).
secure_config() {
  CONFIG="$REPO_ROOT/compose/secure/server.properties"
  export KAP_ADMIN_PASSWORD="${KAP_ADMIN_PASSWORD:-admin-secret}" \
    KAFKA_NODE_ID=1 \
    KAFKA_CONTROLLER_QUORUM_VOTERS="1@127.0.0.1:$KAFKA_CONTROLLER_PORT" \
    KAFKA_LISTENERS="INTERNAL://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT" \
    KAFKA_ADVERTISED_LISTENERS="INTERNAL://127.0.0.1:$KAFKA_PORT" \
    KAFKA_LOG_DIRS="$DATA" \
    KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1 \
    KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR=1 \
    KAFKA_TRANSACTION_STATE_LOG_MIN_ISR=1 \
    KAFKA_DEFAULT_REPLICATION_FACTOR=1 \
    KAFKA_MIN_INSYNC_REPLICAS=1
  # The admin's SCRAM credential must exist before the first start: the broker
  # logs in as admin, and only admin may create the other principals.
  SCRAM=(--add-scram "SCRAM-SHA-512=[name=admin,password=$KAP_ADMIN_PASSWORD]")
}

# A CA and a broker certificate for 127.0.0.1/localhost signed by it, made once; the
# broker reads PEM (key and certificate chain in broker.pem), clients get ca.pem (and
# client.pem/client.key to try mTLS).
make_certs() {
  local certs="$STATE/certs"
  [[ -s "$certs/broker.pem" && -s "$certs/ca.pem" ]] && return 0
  command -v openssl >/dev/null || die "openssl is required to make the TLS broker's certificates"
  rm -rf "$certs.tmp" && mkdir -p "$certs.tmp"
  (
    cd "$certs.tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kap local test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca.key -out ca.pem
    openssl req -new -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout broker.key -out broker.csr
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
      "extendedKeyUsage=serverAuth,clientAuth" >broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile broker.ext -out broker.crt
    cat broker.key broker.crt ca.pem >broker.pem
    # A client certificate from the same CA, for trying mTLS (KAFKA_SSL_CERT_FILE/KEY_FILE).
    openssl req -new -newkey rsa:2048 -nodes -subj "/CN=kap-client" -keyout client.key -out client.csr
    printf '%s\n' "extendedKeyUsage=clientAuth" >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out client.pem
  ) >"$STATE/certs.log" 2>&1 || die "making certificates failed — see ${STATE#"$REPO_ROOT/"}/certs.log"
  rm -rf "$certs" && mv "$certs.tmp" "$certs"
}

tls_config() {
  local user="${KAFKA_TLS_USER:-kap}" password="${KAFKA_TLS_PASSWORD:-kap-tls-secret}"
  [[ "$user$password" =~ ^[A-Za-z0-9_-]+$ ]] ||
    die "KAFKA_TLS_USER and KAFKA_TLS_PASSWORD: letters, digits, _ and - only (they go into a JAAS line)"
  make_certs
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
      -e "s|@KAFKA_SASL_PORT@|$KAFKA_SASL_PORT|g" \
      -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
      -e "s|@DATA_DIR@|$DATA|g" \
      -e "s|@CERTS@|$STATE/certs|g" \
      -e "s|@USER@|$user|g" \
      -e "s|@PASSWORD@|$password|g" \
      "$CONF/tls.properties.template" >"$CONFIG"
  SCRAM=(--add-scram "SCRAM-SHA-512=[name=$user,password=$password]"
         --add-scram "SCRAM-SHA-256=[name=$user,password=$password]")
}

# KRaft needs the log dir formatted with a cluster id once; later starts reuse it.
format_storage() {
  [[ -f "$DATA/meta.properties" ]] && return 0
  local cluster_id="$SHARED_CLUSTER_ID"
  [[ -n "$cluster_id" ]] || cluster_id="$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null)"
  java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG" "${SCRAM[@]}" \
    >"$STATE/format.log" 2>&1 ||
    die "formatting Kafka storage failed — see ${STATE#"$REPO_ROOT/"}/format.log"
}

# Ready = the server logged its startup AND the client port accepts connections.
wait_ready() {
  local pid="$1" i
  for ((i = 0; i < START_TIMEOUT * 2; i++)); do
    if grep -q "Kafka Server started" "$LOG" 2>/dev/null && port_open "$KAFKA_PORT"; then
      local version
      version="$(sed -n 's/.*Kafka version: \([^ ]*\).*/\1/p' "$LOG" | tail -1)"
      echo "$NAME ${version:-$KAFKA_VERSION} up on 127.0.0.1:$KAFKA_PORT (pid $pid)"
      return 0
    fi
    alive "$pid" || { echo "error: $NAME exited during startup; last log lines:" >&2; break; }
    sleep 0.5
  done
  alive "$pid" && echo "error: $NAME not ready after ${START_TIMEOUT}s (pid $pid left running; $DOWN_HINT stops it); last log lines:" >&2
  tail -n 20 "$LOG" >&2 2>/dev/null || true
  [[ -s "$STATE/stdout.log" ]] && tail -n 20 "$STATE/stdout.log" >&2
  exit 1
}

# Start the configured node in the background; its pid is in $PIDFILE on return.
launch() {
  # Keep the previous run's log for post-mortems; readiness grep needs a fresh one.
  [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
  # setsid+nohup: detach from the caller's session so the broker outlives this
  # shell. The inner bash records its own pid, then execs java (same pid).
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
    java $HEAP_OPTS -Djava.awt.headless=true \
      -Dkafka.logs.dir="$STATE" -Dlog4j2.configurationFile="$CONF/log4j2.properties" \
      -cp "$LIBS/*" "$MAIN_CLASS" "$CONFIG" \
    >"$STATE/stdout.log" 2>&1 </dev/null 9>&- &
  for _ in {1..50}; do [[ -s "$PIDFILE" ]] && break; sleep 0.1; done
}

cmd_up() {
  local pid
  lock_state "$STATE"
  if pid="$(live_pid "$PIDFILE" "$MAIN_CLASS")"; then
    if port_open "$KAFKA_PORT"; then
      echo "$NAME already running on 127.0.0.1:$KAFKA_PORT (pid $pid)"
      exit 0
    fi
    wait_ready "$pid"   # ours but still starting (e.g. a concurrent `up`)
    exit 0
  fi
  rm -f "$PIDFILE"      # stale (process gone or pid recycled)
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" ${KAFKA_SASL_PORT:+"$KAFKA_SASL_PORT"}; do
    port_open "$p" && die "port $p on 127.0.0.1 is already in use by another process (set KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
  done

  require_java
  fetch_jars
  if [[ "$SECURE" == 1 ]]; then secure_config
  elif [[ "$TLS" == 1 ]]; then tls_config
  else render_config; fi
  format_storage

  launch
  wait_ready "$(cat "$PIDFILE")"
}

cmd_down() {
  local pid
  lock_state "$STATE"
  if pid="$(live_pid "$PIDFILE" "$MAIN_CLASS")"; then
    stop_pid "$pid" 20   # TERM = controlled shutdown, flushes logs
    echo "$NAME stopped (pid $pid)"
  else
    echo "$NAME not running"
  fi
  rm -f "$PIDFILE"
}

cmd_status() {
  local pid
  if pid="$(live_pid "$PIDFILE" "$MAIN_CLASS")" && port_open "$KAFKA_PORT"; then
    echo "$NAME running on 127.0.0.1:$KAFKA_PORT (pid $pid)"
  elif [[ -n "${pid:-}" ]]; then
    echo "$NAME starting or unresponsive (pid $pid, port $KAFKA_PORT closed)"; exit 1
  else
    echo "$NAME not running"; exit 1
  fi
}

cmd_logs() {
  [[ -f "$LOG" ]] || die "no log yet ($LOG)"
  if [[ "${1:-}" == "-f" ]]; then tail -n 50 -F "$LOG"; else tail -n 50 "$LOG"; fi
}

# --- KAFKA_NODES > 1: a local quorum -------------------------------------------------

# Point the per-node globals (ports, state, config, pid) at node $1.
select_node() {
  KAFKA_PORT=$((CLUSTER_BASE_PORT + 2 * ($1 - 1)))
  KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
  STATE="$CLUSTER_STATE/node-$1"
  DATA="$STATE/data"
  LOG="$STATE/kafka.log"
  PIDFILE="$STATE/kafka.pid"
  CONFIG="$STATE/server.properties"
  NAME="kafka node $1"
  mkdir -p "$STATE"
}

quorum_voters() {
  local n voters=()
  for ((n = 1; n <= NODES; n++)); do
    voters+=("$n@127.0.0.1:$((CLUSTER_BASE_PORT + 2 * (n - 1) + 1))")
  done
  (IFS=,; echo "${voters[*]}")
}

bootstrap_servers() {
  local n servers=()
  for ((n = 1; n <= NODES; n++)); do servers+=("127.0.0.1:$((CLUSTER_BASE_PORT + 2 * (n - 1)))"); done
  (IFS=,; echo "${servers[*]}")
}

render_node_config() {
  sed -e "s|@NODE_ID@|$1|g" \
      -e "s|@QUORUM_VOTERS@|$(quorum_voters)|g" \
      -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
      -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
      -e "s|@DATA_DIR@|$DATA|g" \
      "$CONF/cluster.properties.template" >"$CONFIG"
}

# Every node is formatted with the same cluster id, kept beside the nodes so that a
# node whose data was removed rejoins the same cluster.
shared_cluster_id() {
  local file="$CLUSTER_STATE/cluster.id"
  if [[ ! -s "$file" ]]; then
    java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null >"$file.tmp"
    mv -f "$file.tmp" "$file"
  fi
  cat "$file"
}

# Start every node that is not running (so `up` also restarts a node that died),
# then wait for all: a node reports started only once a majority of the quorum is up,
# so they cannot be started one after another.
cluster_up() {
  local n pid
  lock_state "$CLUSTER_STATE"
  require_java
  fetch_jars
  SHARED_CLUSTER_ID="$(shared_cluster_id)"
  for ((n = 1; n <= NODES; n++)); do
    select_node "$n"
    live_pid "$PIDFILE" "$MAIN_CLASS" >/dev/null && continue
    rm -f "$PIDFILE"
    for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
      port_open "$p" && die "port $p on 127.0.0.1 (node $n) is already in use by another process (set KAFKA_PORT to another base)"
    done
    render_node_config "$n"
    format_storage
    launch
  done
  for ((n = 1; n <= NODES; n++)); do
    select_node "$n"
    pid="$(live_pid "$PIDFILE" "$MAIN_CLASS")" || pid="$(cat "$PIDFILE" 2>/dev/null || echo 0)"
    wait_ready "$pid"
  done
  echo "kafka cluster of $NODES nodes up; bootstrap $(bootstrap_servers)"
}

# TERM every node at once, then wait: stopped one by one, the last node would wait for
# a quorum that is already gone before its controlled shutdown gives up.
cluster_down() {
  local n pid pids=()
  lock_state "$CLUSTER_STATE"
  for ((n = 1; n <= NODES; n++)); do
    select_node "$n"
    if pid="$(live_pid "$PIDFILE" "$MAIN_CLASS")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$n:$pid")
    else
      echo "$NAME not running"
    fi
  done
  for entry in "${pids[@]}"; do
    n="${entry%%:*}" pid="${entry#*:}"
    if ! wait_exit "$pid" 30; then
      echo "kafka node $n (pid $pid) did not stop within 30 s, killing" >&2
      kill -KILL "$pid" 2>/dev/null || true
      wait_exit "$pid" 5 || true
    fi
    echo "kafka node $n stopped (pid $pid)"
  done
  for ((n = 1; n <= NODES; n++)); do rm -f "$CLUSTER_STATE/node-$n/kafka.pid"; done
}

cluster_status() {
  local n pid down=0
  for ((n = 1; n <= NODES; n++)); do
    select_node "$n"
    if pid="$(live_pid "$PIDFILE" "$MAIN_CLASS")" && port_open "$KAFKA_PORT"; then
      echo "$NAME running on 127.0.0.1:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT, pid $pid)"
    elif [[ -n "${pid:-}" ]]; then
      echo "$NAME starting or unresponsive (pid $pid, port $KAFKA_PORT closed)"; down=1
    else
      echo "$NAME not running"; down=1
    fi
    pid=""
  done
  return "$down"
}

cluster_logs() {
  local n logs=()
  for ((n = 1; n <= NODES; n++)); do logs+=("$CLUSTER_STATE/node-$n/kafka.log"); done
  if [[ "${1:-}" == "-f" ]]; then tail -n 20 -F "${logs[@]}"; else tail -n 20 "${logs[@]}"; fi
}

if ((NODES > 1)); then
  case "${1:-}" in
    up) cluster_up ;;
    down) cluster_down ;;
    status) cluster_status ;;
    logs) shift; cluster_logs "$@" ;;
    *) echo "usage: KAFKA_NODES=$NODES $0 up|down|status|logs [-f]" >&2; exit 2 ;;
  esac
  exit $?
fi

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  *) echo "usage: $0 up|down|status|logs [-f]" >&2; exit 2 ;;
esac
