#!/usr/bin/env bash
# Start local Redis and RabbitMQ if they are not answering; install them from Debian's
# packages if they are absent. Idempotent. Needs root (or sudo) on a Debian machine.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # name, seconds, command...
  local name=$1 seconds=$2; shift 2
  for _ in $(seq 1 "$seconds"); do
    if "$@" >/dev/null 2>&1; then echo "$name is up"; return 0; fi
    sleep 1
  done
  echo "$name did not come up within ${seconds}s" >&2
  return 1
}

if port_open 6379; then
  echo "redis is up"
else
  command -v redis-server >/dev/null || apt_install redis-server
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for redis 30 port_open 6379
fi

rabbit_answers() {  # the port is open and the broker accepts AMQP connections on it
  port_open 5672 && timeout 60 $SUDO rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1
}

rabbit_nofile() {  # the running broker's limit of open files, if it can be read here
  local pid
  pid=$(pgrep -o -f beam.smp) || return 1
  awk '/^Max open files/ {print $4}' "/proc/$pid/limits" 2>/dev/null
}

restart_reason=""
if port_open 5672 && ! rabbit_answers; then
  # seen: out of file descriptors after many killed test runs left their stream queues
  restart_reason="it holds its port but does not answer"
elif port_open 5672 && limit=$(rabbit_nofile) && [ "$limit" != unlimited ] && [ "$limit" -lt 4096 ]; then
  # every stream queue holds file descriptors: a broker started with the default 1024
  # runs out under the suite's and the benchmarks' hundreds of runs
  restart_reason="it may open only $limit files"
fi
if [ -n "$restart_reason" ]; then
  echo "rabbitmq: $restart_reason; restarting it" >&2
  timeout 120 $SUDO rabbitmqctl stop >/dev/null 2>&1 || $SUDO pkill -f beam.smp || true
  for _ in $(seq 1 60); do port_open 5672 || break; sleep 1; done
fi

if port_open 5672; then
  echo "rabbitmq is up"
else
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  # every retained run is a stream queue holding broker file descriptors; the Debian
  # script starts the broker through su, whose pam_limits applies this. A limit above
  # this process' hard limit is silently ignored (seen: a container capped at 20000)
  nofile=$(ulimit -Hn); if [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; then nofile=65536; fi
  echo "rabbitmq - nofile $nofile" | $SUDO tee /etc/security/limits.d/eventbus-rabbitmq.conf >/dev/null
  $SUDO rabbitmq-server -detached
  wait_for rabbitmq 120 $SUDO rabbitmqctl await_startup
  wait_for "rabbitmq (amqp port)" 60 port_open 5672
  echo "rabbitmq may open $(rabbit_nofile || echo '?') files"
fi
