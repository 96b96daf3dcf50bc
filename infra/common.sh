# Shared helpers for infra/*.sh (sourced, not executed).

# Repo root = parent of this file's directory, so scripts work from any cwd.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INFRA_STATE="$REPO_ROOT/.infra"   # runtime state (jars, data, logs, pids); never committed

die() { echo "error: $*" >&2; exit 1; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Print the pid stored in file $1 if that process is alive and its command line
# contains $2 (guards against a recycled pid after a reboot or crash).
live_pid() {
  local pid
  [[ -s "$1" ]] || return 1
  pid="$(tr -dc '0-9' <"$1")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2" || return 1
  echo "$pid"
}

# True if pid $1 exists and is not a zombie (our daemons get re-parented to
# pid 1, which in containers does not always reap them, so kill -0 is not enough).
alive() {
  local state
  state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [[ -n "$state" && "$state" != Z ]]
}

# Wait up to $2 seconds for pid $1 to exit.
wait_exit() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    alive "$1" || return 0
    sleep 0.1
  done
  return 1
}

# TERM the process, then KILL it if it has not exited after $2 seconds.
stop_pid() {
  kill -TERM "$1" 2>/dev/null || return 0
  wait_exit "$1" "$2" && return 0
  echo "pid $1 did not stop within $2 s, killing" >&2
  kill -KILL "$1" 2>/dev/null || true
  wait_exit "$1" 5 || true
}

# Serialise up/down of one service (e.g. parallel test runners all calling `up`).
# Daemons must be started with 9>&- so they do not inherit (and keep) the lock.
lock_state() {
  mkdir -p "$1"
  exec 9>"$1/.lock"
  flock -w 120 9 || die "timed out waiting for lock $1/.lock"
}
