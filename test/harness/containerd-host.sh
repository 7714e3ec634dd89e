#!/usr/bin/env bash
# Starts a containerd of shadowlayer's own for the containerd/CRI tests: its own root, state,
# sockets and config, so the Docker engine's containerd (/run/containerd/containerd.sock) is never
# touched. The CRI plugin is enabled, pods run with host networking (no CNI is configured), the
# snapshotter is overlayfs and the sandbox ("pause") image is a local tag that the test harness
# builds and imports (nothing can be pulled here).
#
# Idempotent: reuses a running instance (when it answers and its CRI plugin is ok). Installs
# containerd with apt when absent (Debian's, installed with docker.io, has the CRI plugin). Needs
# root. Prints the socket path on stdout; progress goes to stderr.
#
# Environment (defaults in brackets):
#   SHADOWLAYER_CONTAINERD_DIR    run directory: socket, state, config, pid [/run/shadowlayer-containerd]
#   SHADOWLAYER_CONTAINERD_ROOT   persistent root (content, snapshots, metadata) [/var/lib/shadowlayer-containerd]
#   SHADOWLAYER_CONTAINERD_LOG    log file [/var/log/shadowlayer-containerd.log]
#   SHADOWLAYER_SANDBOX_IMAGE     the CRI sandbox_image [shadowlayer.test/pause:1]
set -euo pipefail

DIR="${SHADOWLAYER_CONTAINERD_DIR:-/run/shadowlayer-containerd}"
ROOT="${SHADOWLAYER_CONTAINERD_ROOT:-/var/lib/shadowlayer-containerd}"
LOG="${SHADOWLAYER_CONTAINERD_LOG:-/var/log/shadowlayer-containerd.log}"
SANDBOX_IMAGE="${SHADOWLAYER_SANDBOX_IMAGE:-shadowlayer.test/pause:1}"
SOCK="$DIR/containerd.sock"
TTRPC_SOCK="$DIR/containerd.sock.ttrpc"
STATE="$DIR/state"
CONFIG="$DIR/config.toml"
PIDFILE="$DIR/containerd.pid"
DOCKER_SOCK=/run/containerd/containerd.sock

say() { printf '[containerd-host] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# Never point this instance at Docker's containerd.
# (A packaged containerd listens on /run/containerd; dockerd's own one under /var/run/docker/containerd.)
case "$SOCK" in "$DOCKER_SOCK" | /run/containerd/* | /var/run/containerd/* | /run/docker/* | /var/run/docker/*) die "refusing to use $SOCK: that is Docker's containerd" ;; esac
case "$ROOT" in /var/lib/containerd | /var/lib/containerd/* | /var/lib/docker | /var/lib/docker/*) die "refusing to use $ROOT: that is Docker's containerd root" ;; esac

answers() { ctr --address "$SOCK" --timeout 2s version >/dev/null 2>&1; }

cri_ok() {
  ctr --address "$SOCK" --timeout 5s plugins ls 2>/dev/null | awk '$1 == "io.containerd.grpc.v1" && $2 == "cri" { print $NF }' | grep -qx ok
}

[ "$(id -u)" = 0 ] || { [ -S "$SOCK" ] && answers && cri_ok && { printf '%s\n' "$SOCK"; exit 0; }; die "no usable containerd on $SOCK and not root: run this script as root"; }

if ! command -v containerd >/dev/null 2>&1 || ! command -v ctr >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
  say "installing containerd and runc"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc >/dev/null
fi

mkdir -p "$DIR" "$STATE" "$DIR/runc" "$ROOT" "$(dirname "$LOG")"
chmod 0711 "$DIR"
# One starter at a time (test processes of several worktrees may call this together).
exec 9>"$DIR/.lock"
flock -w 120 9 || die "timed out waiting for another containerd-host.sh ($DIR/.lock)"

# The default config with our paths, section by section (the key names repeat across sections).
containerd config default | awk \
  -v root="$ROOT" -v state="$STATE" -v sock="$SOCK" -v ttrpc="$TTRPC_SOCK" -v sandbox="$SANDBOX_IMAGE" -v opt="$ROOT/opt" -v runc="$DIR/runc" '
  /^[[:space:]]*\[/ { sect = $0; gsub(/^[[:space:]]+|[[:space:]]+$/, "", sect) }
  function set(v) { sub(/=.*/, "= " v); }
  sect == "" && /^root = /                                   { set("\"" root "\"") }
  sect == "" && /^state = /                                  { set("\"" state "\"") }
  sect == "" && /^disabled_plugins = /                       { set("[]") }
  sect == "[grpc]" && /^[[:space:]]*address = /              { set("\"" sock "\"") }
  sect == "[grpc]" && /^[[:space:]]*tcp_address = /          { set("\"\"") }
  sect == "[ttrpc]" && /^[[:space:]]*address = /             { set("\"" ttrpc "\"") }
  sect == "[debug]" && /^[[:space:]]*address = /             { set("\"\"") }
  sect == "[metrics]" && /^[[:space:]]*address = /           { set("\"\"") }
  sect == "[plugins.\"io.containerd.grpc.v1.cri\"]" && /^[[:space:]]*sandbox_image = /         { set("\"" sandbox "\"") }
  sect == "[plugins.\"io.containerd.grpc.v1.cri\"]" && /^[[:space:]]*stream_server_address = / { set("\"127.0.0.1\"") }
  sect == "[plugins.\"io.containerd.grpc.v1.cri\"]" && /^[[:space:]]*disable_tcp_service = /   { set("true") }
  sect == "[plugins.\"io.containerd.grpc.v1.cri\"]" && /^[[:space:]]*systemd_cgroup = /        { set("false") }
  sect == "[plugins.\"io.containerd.grpc.v1.cri\".containerd]" && /^[[:space:]]*snapshotter = / { set("\"overlayfs\"") }
  sect == "[plugins.\"io.containerd.grpc.v1.cri\"]" && /^[[:space:]]*restrict_oom_score_adj = / { set("true") }
  /^[[:space:]]*SystemdCgroup = /                            { set("false") }
  sect ~ /containerd\.runtimes\.runc\.options\]$/ && /^[[:space:]]*Root = /  { set("\"" runc "\"") }
  sect == "[plugins.\"io.containerd.internal.v1.opt\"]" && /^[[:space:]]*path = / { set("\"" opt "\"") }
  { print }
' >"$CONFIG.tmp"

# Check that every setting landed (a different default layout must fail loudly, not run on Docker's paths).
for want in "^root = \"$ROOT\"" "^state = \"$STATE\"" "address = \"$SOCK\"" "address = \"$TTRPC_SOCK\"" \
  "sandbox_image = \"$SANDBOX_IMAGE\"" 'snapshotter = "overlayfs"' 'SystemdCgroup = false' 'restrict_oom_score_adj = true' \
  "Root = \"$DIR/runc\""; do
  grep -Eq "$want" "$CONFIG.tmp" || die "could not set '$want' in the containerd config (containerd $(containerd --version))"
done
if grep -q '/run/containerd/containerd.sock' "$CONFIG.tmp"; then die "the generated config still names Docker's containerd socket"; fi

# Running already with this very config: reuse it. With another config: restart it below.
if [ -S "$SOCK" ] && answers && cmp -s "$CONFIG.tmp" "$CONFIG"; then
  rm -f "$CONFIG.tmp"
  cri_ok || die "containerd on $SOCK answers but its CRI plugin is not ok (see $LOG; stop it: kill \$(cat $PIDFILE))"
  say "containerd answers on $SOCK (CRI ok)"
  printf '%s\n' "$SOCK"
  exit 0
fi
mv "$CONFIG.tmp" "$CONFIG"

# A stale instance of ours (not answering, or started from another config): stop it by its pid
# file (only a containerd whose command line names our config), drop the sockets.
if [ -f "$PIDFILE" ]; then
  old="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [ -n "$old" ] && [ "$(cat "/proc/$old/comm" 2>/dev/null || true)" = containerd ] && tr '\0' ' ' <"/proc/$old/cmdline" | grep -qF -- "$CONFIG" 2>/dev/null; then
    say "stopping our containerd $old (unresponsive or configured differently)"
    kill "$old" 2>/dev/null || true
    for _ in $(seq 1 20); do [ -e "/proc/$old" ] || break; sleep 0.25; done
    kill -9 "$old" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
fi
rm -f "$SOCK" "$TTRPC_SOCK"

say "starting containerd (root $ROOT, state $STATE) on $SOCK, log in $LOG"
# (fd 9, the lock, is not inherited: the daemon must not hold it.)
nohup containerd --config "$CONFIG" >>"$LOG" 2>&1 </dev/null 9>&- &
pid=$!
echo "$pid" >"$PIDFILE"

for _ in $(seq 1 60); do
  if ! kill -0 "$pid" 2>/dev/null; then
    say "containerd exited; last log lines:"; tail -n 20 "$LOG" >&2 || true; exit 1
  fi
  if [ -S "$SOCK" ] && answers; then
    # CRI loads after the socket opens; give it a moment.
    for _ in $(seq 1 20); do
      if cri_ok; then
        say "containerd up (pid $pid, CRI ok)"
        printf '%s\n' "$SOCK"
        exit 0
      fi
      sleep 0.25
    done
    say "containerd answers but its CRI plugin is not ok:"
    ctr --address "$SOCK" plugins ls 2>&1 | grep -E 'cri|overlayfs' >&2 || true
    tail -n 20 "$LOG" >&2 || true
    exit 1
  fi
  sleep 0.5
done
say "containerd did not answer within 30 s; last log lines:"
tail -n 20 "$LOG" >&2 || true
exit 1
