#!/usr/bin/env bash
# paddock's main job, end to end: stage the sample app (examples/hello) into a droplet, run two
# instances of it through containerd with paddock, each in its own sandbox and network
# namespace with a host port; ask both over HTTP, show their usage, then stop everything and
# show that nothing is left.
#
# Uses the system containerd when one answers on /run/containerd/containerd.sock (or
# $CONTAINERD_ADDRESS); otherwise starts a private one (scripts/containerd.sh) for the demo and
# stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building paddock and paddock-stager"
cargo build -q --locked -p paddock-runtime -p paddock-stager
bin=$PWD/target/debug
export PATH="$bin:$PATH"

address=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}
private=""
cleanup() {
  "$bin/paddock-stager" --address "$address" stop hello >/dev/null 2>&1 || true
  [ -n "$private" ] && scripts/containerd.sh stop "$private"
  return 0
}
trap cleanup EXIT
if ctr --address "$address" version >/dev/null 2>&1; then
  step "using the containerd at $address"
else
  private=/run/paddock-demo-containerd
  step "no containerd answers at $address: starting a private one in $private"
  address=$(scripts/containerd.sh start "$private")
fi
# Instances run through containerd's runc shim, which execs paddock (BinaryName).
stager=("$bin/paddock-stager" --address "$address" --runtime io.containerd.runc.v2 --runtime-binary "$bin/paddock")

step "paddock-stager stage examples/hello"
droplet=$("${stager[@]}" stage examples/hello | tee /dev/stderr | tail -1)

step "paddock-stager run $droplet --name hello --instances 2 --memory 64M --disk 64M"
"${stager[@]}" run "$droplet" --name hello --instances 2 --memory 64M --disk 64M

for port in $("${stager[@]}" ps hello --format json | jq -r '.[].host_port'); do
  step "curl http://127.0.0.1:$port/"
  curl -sS "http://127.0.0.1:$port/"
done

step "paddock-stager ps hello"
"${stager[@]}" ps hello

step "paddock-stager logs hello --index 0"
"${stager[@]}" logs hello --index 0

step "paddock-stager stop hello"
"${stager[@]}" stop hello

step "what is left of the app: containers, cgroups, network namespaces, the bridge"
echo "containers: $(ctr --address "$address" -n paddock containers ls -q | wc -l)," \
  "cgroup dirs: $( (find /sys/fs/cgroup/*/paddock/hello -maxdepth 0 2>/dev/null || true) | wc -l)," \
  "netns: $(ls /run/paddock-stager/netns 2>/dev/null | wc -l)," \
  "bridge paddock0: $(ip link show paddock0 >/dev/null 2>&1 && echo present || echo gone)"
