#!/usr/bin/env bash
# The whole test suite, as root on Debian 12: installs what it needs, builds, runs the unit
# tests and the root integration tests (real kernel, cgroups, containerd), then checks that
# the run left nothing on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: run as root (the integration tests use real namespaces and cgroups)" >&2
  exit 1
fi
scripts/install-deps.sh

# The build needs about 7 GiB beside the repo and the tests make loop images (up to a few
# hundred MiB each) under the temporary directory: refuse a machine that cannot hold them,
# rather than failing halfway with a misleading test error.
need_space() { # <dir> <GiB>
  local avail
  avail=$(df -Pk "$1" | awk 'NR==2 {print $4}')
  if [ "$avail" -lt $(($2 * 1024 * 1024)) ]; then
    echo "test.sh: $1 has $((avail / 1024)) MiB free; the suite needs $2 GiB there" >&2
    exit 1
  fi
}
if [ -d target/x86_64-unknown-linux-gnu/debug ]; then need_space . 3; else need_space . 8; fi
need_space "${TMPDIR:-/tmp}" 2

leftovers() {
  { find /sys/fs/cgroup/*/paddock /sys/fs/cgroup/paddock -mindepth 1 -type d 2>/dev/null || true
    grep paddock /proc/self/mountinfo | awk '{print "mount " $5}' || true
    losetup -a 2>/dev/null | grep paddock | sed 's/^/loop /' || true
    find /run/paddock/containerd -mindepth 1 -maxdepth 1 2>/dev/null | sed 's/^/shim state /' || true
    # instance networking (paddock-stager): CNI nat rules and chains, paddock bridges and the
    # veths on them, network namespaces bind-mounted in a netns directory
    iptables -w -t nat -S 2>/dev/null | grep CNI | sed 's/^/nat /' || true
    for dev in /sys/class/net/*; do
      name=${dev##*/}
      case $name in paddock*|pdst*) [ -d "$dev/bridge" ] && echo "bridge $name" ;; esac
      master=$(basename "$(readlink "$dev/master" 2>/dev/null)" 2>/dev/null || true)
      case $master in paddock*|pdst*) echo "veth $name master $master" ;; esac
    done
    awk '$0 ~ / - nsfs / && $5 ~ /\/netns\/[^\/]+$/ && $5 !~ /^\/run\/netns\// {print "netns " $5}' /proc/self/mountinfo
    ps -eo pid=,stat=,args= | grep -E 'paddock|containerd-shim' | grep -v -E 'grep|scripts/test.sh|cargo|target/x86_64-unknown-linux-gnu/debug/deps' \
      | awk '$2 !~ /^Z/ {print "process " $0}' || true
  } | sort
}
before=$(leftovers)

cargo build --workspace --all-targets --locked
# Integration tests share node-wide state (mounts, cgroup trees) and compare it before and
# after: one test at a time.
cargo test --workspace --locked -- --test-threads=1

after=$(leftovers)
new=$(comm -13 <(echo "$before") <(echo "$after") | sed '/^$/d')
if [ -n "$new" ]; then
  echo "test.sh: the suite left these behind:" >&2
  echo "$new" >&2
  exit 1
fi
echo "test.sh: nothing left behind"
