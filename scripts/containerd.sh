#!/usr/bin/env bash
# A private containerd for paddock where none runs (no systemd, as on CI):
#   scripts/containerd.sh start DIR   starts containerd with its root, state, sockets under DIR,
#                                     the CRI plugin off, and waits until it answers; prints
#                                     the socket
#   scripts/containerd.sh stop DIR    stops it (by the pid it recorded) and removes DIR
# PATH is passed on, so containerd finds shims such as containerd-shim-paddock-v2 there.
set -euo pipefail
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: containerd.sh start|stop DIR" >&2; exit 2; }
case $cmd in
start)
  mkdir -p "$dir"/{root,state,tmp,opt}
  cat >"$dir/config.toml" <<TOML
# paddock's private containerd (scripts/containerd.sh)
version = 2
root = "$dir/root"
state = "$dir/state"
temp = "$dir/tmp"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
TOML
  setsid /usr/bin/containerd --config "$dir/config.toml" </dev/null >"$dir/containerd.log" 2>&1 &
  echo $! >"$dir/containerd.pid"
  for _ in $(seq 200); do
    if ctr --address "$dir/containerd.sock" version >/dev/null 2>&1; then
      echo "$dir/containerd.sock"; exit 0
    fi
    kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "containerd.sh: containerd did not start; its log:" >&2
  tail -20 "$dir/containerd.log" >&2
  exit 1 ;;
stop)
  if [ -f "$dir/containerd.pid" ]; then
    pid=$(cat "$dir/containerd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  # overlay mounts of tasks that outlived their shim would pin the directory
  grep -F " $dir/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$dir" ;;
*) echo "usage: containerd.sh start|stop DIR" >&2; exit 2 ;;
esac
