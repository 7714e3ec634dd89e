#!/usr/bin/env bash
# Makes this host ready for shadowlayer: a Docker engine answering on its socket (installed and
# started with no bridge network if absent), busybox-static for the test images, docker-registry
# and apache2-utils for the registry tests, and bpftrace with
# tracefs mounted for eBPF exec events (the agent falls back to /proc polling without them).
# Idempotent: reuses a running engine. Needs root only when something must be installed or started.
set -euo pipefail

SOCK="${SHADOWLAYER_DOCKER_SOCKET:-/var/run/docker.sock}"
LOG="${SHADOWLAYER_DOCKERD_LOG:-/var/log/shadowlayer-dockerd.log}"
apt_updated=0

say() { printf '[docker-host] %s\n' "$*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    say "need root to install $*; install them yourself (apt-get install -y $*)"; exit 1
  fi
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

engine_answers() {
  curl -fsS --max-time 2 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1
}

command -v curl >/dev/null 2>&1 || apt_install curl
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || apt_install busybox-static
command -v bpftrace >/dev/null 2>&1 || apt_install bpftrace
# setfattr: the overlay tests make opaque directories with real xattrs (the agent reads them through libc).
command -v getfattr >/dev/null 2>&1 || apt_install attr
# docker-registry and htpasswd: the rebuild tests push shadows to a real TLS registry with basic auth.
command -v docker-registry >/dev/null 2>&1 || apt_install docker-registry
command -v htpasswd >/dev/null 2>&1 || apt_install apache2-utils
if [ ! -e /sys/kernel/tracing/events/sched/sched_process_exec ] && [ ! -e /sys/kernel/debug/tracing/events/sched/sched_process_exec ]; then
  if [ "$(id -u)" = 0 ]; then
    say "mounting tracefs at /sys/kernel/tracing"
    mount -t tracefs nodev /sys/kernel/tracing || say "could not mount tracefs: eBPF exec events will be unavailable"
  else
    say "tracefs is not mounted and we are not root: eBPF exec events will be unavailable"
  fi
fi

if engine_answers; then
  say "engine answers on $SOCK"
  exit 0
fi

command -v dockerd >/dev/null 2>&1 || apt_install docker.io
if [ "$(id -u)" != 0 ]; then
  say "no engine on $SOCK and not root: start one with"
  say "  sudo dockerd --bridge=none --iptables=false --ip-masq=false"
  exit 1
fi

say "starting dockerd (no bridge, no iptables) on $SOCK, log in $LOG"
nohup dockerd --bridge=none --iptables=false --ip-masq=false -H "unix://$SOCK" >>"$LOG" 2>&1 &
for _ in $(seq 1 60); do
  if engine_answers; then say "engine up"; exit 0; fi
  sleep 0.5
done
say "dockerd did not answer within 30 s; last log lines:"
tail -n 20 "$LOG" >&2 || true
exit 1
