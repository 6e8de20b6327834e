#!/usr/bin/env bash
# A local 3-node RabbitMQ cluster for the cluster tests: nodes ebus1@localhost ..
# ebus3@localhost, AMQP on 127.0.0.1:$EVENTBUS_RABBIT_CLUSTER_PORT .. +2 (default 5701-5703),
# Erlang distribution on 25701-25703, everything (data, logs, config, and the Erlang cookie:
# HOME) under $EVENTBUS_RABBIT_CLUSTER_DIR (default /tmp/eventbus-rabbitmq-cluster).
#
#   bash .ci/rabbitmq-cluster.sh start   # idempotent: starts missing nodes, joins them, waits
#   bash .ci/rabbitmq-cluster.sh stop    # stops the three nodes, removes their data
#   bash .ci/rabbitmq-cluster.sh status  # running nodes; exit 1 unless all three run
#
# Its own cookie (HOME) means its rabbitmqctl cannot reach another broker on this machine,
# and the other broker's cannot reach it. Lean: no plugins, 1 GB memory watermark.
set -euo pipefail

BASE=${EVENTBUS_RABBIT_CLUSTER_PORT:-5701}
DIR=${EVENTBUS_RABBIT_CLUSTER_DIR:-/tmp/eventbus-rabbitmq-cluster}
WAIT=${EVENTBUS_RABBIT_CLUSTER_WAIT:-180}
BIN=/usr/lib/rabbitmq/bin
NODES="1 2 3"

node() { echo "ebus$1@localhost"; }

node_env() {  # the environment of node $1 (also what its rabbitmqctl needs: HOME)
  local i=$1 d="$DIR/ebus$1"
  export HOME="$DIR/home" RABBITMQ_NODENAME
  RABBITMQ_NODENAME=$(node "$i")
  export RABBITMQ_NODE_PORT=$((BASE + i - 1)) RABBITMQ_DIST_PORT=$((25700 + i))
  export RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log"
  export RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
  export RABBITMQ_PID_FILE="$d/pid" RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf"
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+A 8"
  export ERL_CRASH_DUMP="$DIR/erl_crash.dump"  # not in the caller's directory
}

ctl() {  # node, args...
  local i=$1; shift
  mkdir -p "$DIR/home"  # the CLI's Erlang needs a HOME for its cookie, even to fail
  (node_env "$i"; cd "$DIR" && timeout 120 "$BIN/rabbitmqctl" -n "$(node "$i")" "$@")
}

running() { ctl "$1" -q status >/dev/null 2>&1; }

ensure_rabbitmq() {
  [ -x "$BIN/rabbitmq-server" ] && return 0
  local sudo=""; if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rabbitmq-server >/dev/null
}

start_node() {
  local i=$1 d="$DIR/ebus$1"
  mkdir -p "$d/mnesia" "$d/log" "$DIR/home"
  cat > "$d/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$((BASE + i - 1))
loopback_users = none
vm_memory_high_watermark.absolute = 1GB
EOF
  echo "[]." > "$d/enabled_plugins"
  echo "ERL_EPMD_ADDRESS=127.0.0.1" > "$DIR/rabbitmq-env.conf"
  (node_env "$i"; ulimit -n 65536 2>/dev/null || true; "$BIN/rabbitmq-server" -detached)
  # -detached returns at once; the node registers with epmd a few seconds later
  local deadline=$((SECONDS + WAIT))
  until ctl "$i" await_startup >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "rabbitmq-cluster: $(node "$i") did not start within ${WAIT}s" >&2
      return 1
    fi
    sleep 1
  done
}

members() {  # running nodes of the cluster, as node 1 sees them
  ctl 1 -q cluster_status --formatter json 2>/dev/null \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))' 2>/dev/null \
    || echo 0
}

start() {
  ensure_rabbitmq
  local i
  for i in $NODES; do running "$i" || start_node "$i"; done
  for i in 2 3; do
    if ! ctl "$i" -q cluster_status --formatter json 2>/dev/null | grep -q "$(node 1)"; then
      ctl "$i" stop_app >/dev/null
      ctl "$i" reset >/dev/null
      ctl "$i" join_cluster "$(node 1)" >/dev/null 2>&1
    fi
    ctl "$i" start_app >/dev/null
  done
  local deadline=$((SECONDS + WAIT))
  while [ "$(members)" != 3 ]; do
    if [ $SECONDS -ge $deadline ]; then
      echo "rabbitmq-cluster: not 3 running nodes within ${WAIT}s" >&2
      return 1
    fi
    sleep 1
  done
  echo "rabbitmq-cluster: 3 nodes on ports $BASE-$((BASE + 2))"
}

stop() {
  local i pid
  for i in $NODES; do
    if running "$i"; then ctl "$i" stop >/dev/null 2>&1 || true; fi
    # a node that does not answer rabbitmqctl: its own pid, if it is still our node
    pid=$(cat "$DIR/ebus$i/pid" 2>/dev/null || true)
    if [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$DIR/home"; then
      kill "$pid" 2>/dev/null || true
      sleep 2
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$DIR"
  echo "rabbitmq-cluster: stopped"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) echo "running nodes: $(members)"; [ "$(members)" = 3 ] ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
