#!/usr/bin/env bash
# A local Redis Cluster for the cluster tests: 3 primaries + 3 replicas on 127.0.0.1,
# ports $EVENTBUS_CLUSTER_PORT .. +5 (default 7100-7105), data under $EVENTBUS_CLUSTER_DIR
# (default /tmp/eventbus-redis-cluster: nothing is kept, persistence is off).
#
#   bash .ci/redis-cluster.sh start    # idempotent: starts missing nodes, creates the cluster
#                                      # once, waits for cluster_state:ok (EVENTBUS_CLUSTER_WAIT s)
#   bash .ci/redis-cluster.sh stop     # stops the six nodes (SHUTDOWN NOSAVE), removes the data
#   bash .ci/redis-cluster.sh status   # cluster_state of each node; exit 1 unless all say ok
#
# A node that died (a test killed it) is started again with its nodes.conf and rejoins as a
# replica. A cluster that cannot be repaired that way is recreated from scratch.
# cluster-node-timeout is 2 s so that a failover in the tests takes seconds, not 15 s.
set -euo pipefail

BASE=${EVENTBUS_CLUSTER_PORT:-7100}
DIR=${EVENTBUS_CLUSTER_DIR:-/tmp/eventbus-redis-cluster}
WAIT=${EVENTBUS_CLUSTER_WAIT:-60}
PORTS=$(seq "$BASE" $((BASE + 5)))

cli() { timeout 10 redis-cli -h 127.0.0.1 -p "$@"; }
answers() { [ "$(cli "$1" PING 2>/dev/null)" = PONG ]; }
state() { cli "$1" CLUSTER INFO 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p'; }
known() { cli "$1" CLUSTER INFO 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_known_nodes://p'; }

ensure_redis() {
  command -v redis-server >/dev/null && return 0
  local sudo=""; if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
}

start_node() {
  local port=$1
  mkdir -p "$DIR/$port"
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
    --dir "$DIR/$port" --pidfile "$DIR/$port/redis.pid" --logfile "$DIR/$port/redis.log" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --save "" --appendonly no --protected-mode yes
  for _ in $(seq 1 50); do answers "$port" && return 0; sleep 0.1; done
  echo "redis-cluster: node $port did not answer" >&2
  return 1
}

linked() { cli "$1" INFO replication 2>/dev/null | grep -q '^master_link_status:up'; }

all_ok() {  # every node says ok, and three replicas are in sync with their primaries
  local p replicas=0
  for p in $PORTS; do
    [ "$(state "$p")" = ok ] || return 1
    if linked "$p"; then replicas=$((replicas + 1)); fi
  done
  [ "$replicas" -eq 3 ]
}

wait_ok() {
  local deadline=$((SECONDS + WAIT))
  while [ $SECONDS -lt $deadline ]; do
    if all_ok; then echo "redis-cluster: ok on ports $BASE-$((BASE + 5))"; return 0; fi
    sleep 0.5
  done
  echo "redis-cluster: cluster_state not ok on every node within ${WAIT}s" >&2
  for p in $PORTS; do echo "  $p: $(state "$p" || true)" >&2; done
  return 1
}

stop() {
  local p pid
  for p in $PORTS; do
    if answers "$p"; then cli "$p" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; fi
    pid=$(cat "$DIR/$p/redis.pid" 2>/dev/null || true)
    # only our own node's pid, and only if it is still a redis-server on that port
    if [ -n "$pid" ] && grep -qs "redis-server.*:$p" "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
    fi
  done
  for p in $PORTS; do
    for _ in $(seq 1 50); do answers "$p" || break; sleep 0.1; done
  done
  rm -rf "$DIR"
  echo "redis-cluster: stopped"
}

create() {
  local addrs=() p
  for p in $PORTS; do addrs+=("127.0.0.1:$p"); done
  timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
}

start() {
  ensure_redis
  local p
  if all_ok; then echo "redis-cluster: ok on ports $BASE-$((BASE + 5))"; return 0; fi
  for p in $PORTS; do answers "$p" || start_node "$p"; done
  if [ "$(known "$BASE")" = 1 ]; then
    create
  fi
  if ! wait_ok; then
    echo "redis-cluster: recreating it from scratch" >&2
    stop
    for p in $PORTS; do start_node "$p"; done
    create
    wait_ok
  fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) for p in $PORTS; do echo "$p: $(state "$p" || echo down)"; done; all_ok ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
