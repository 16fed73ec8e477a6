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

step "building paddock, its containerd shim and paddock-stager"
cargo build -q --locked -p paddock-runtime -p containerd-shim-paddock -p paddock-stager
bin=$PWD/target/x86_64-unknown-linux-gnu/debug   # .cargo/config.toml names the target
# containerd finds the shim (containerd-shim-paddock-v2) on its PATH; the shim runs the
# paddock next to it
export PATH="$bin:$PATH"

address=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}
private=""
cleanup() {
  "$bin/paddock-stager" --address "$address" stop hello >/dev/null 2>&1 || true
  [ -n "$private" ] && scripts/containerd.sh stop "$private"
  return 0
}
trap cleanup EXIT
system_has_shim() {
  # the system containerd's PATH, as systemd gives it, must hold the shim
  local d
  for d in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
    [ -x "$d/containerd-shim-paddock-v2" ] && return 0
  done
  return 1
}
if ctr --address "$address" version >/dev/null 2>&1 && system_has_shim; then
  step "using the containerd at $address"
else
  private=/run/paddock-demo-containerd
  if ctr --address "$address" version >/dev/null 2>&1; then
    step "the containerd at $address cannot find containerd-shim-paddock-v2 (see README): starting a private one in $private"
  else
    step "no containerd answers at $address: starting a private one in $private"
  fi
  address=$(scripts/containerd.sh start "$private")
fi
# Instances run through paddock's own shim: runtime io.containerd.paddock.v2 (the stager's
# default).
stager=("$bin/paddock-stager" --address "$address" --runtime io.containerd.paddock.v2)

step "paddock-stager stage examples/hello"
staged=$("${stager[@]}" stage examples/hello)
printf '%s\n' "$staged"
droplet=${staged##*$'\n'}

step "paddock-stager run $droplet --name hello --instances 2 --memory 64M --disk 64M"
"${stager[@]}" run "$droplet" --name hello --instances 2 --memory 64M --disk 64M

for port in $("${stager[@]}" ps hello --format json | jq -r '.[].host_port'); do
  step "curl http://127.0.0.1:$port/"
  curl -sS "http://127.0.0.1:$port/"
done

step "paddock-stager ps hello"
"${stager[@]}" ps hello

step "the limits each instance runs under (its cgroup files, read on the host; its quota volume)"
for id in $("${stager[@]}" ps hello --format json | jq -r '.[].id'); do
  line="$id:"
  for f in memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes pids/pids.max \
           cpu/cpu.shares cpu/cpu.cfs_quota_us memory.max memory.swap.max pids.max cpu.weight cpu.max; do
    case $f in
      */*) file=/sys/fs/cgroup/${f%%/*}/paddock/hello/$id/${f#*/} ;;
      *) file=/sys/fs/cgroup/paddock/hello/$id/$f ;;
    esac
    if [ -r "$file" ]; then line="$line ${f#*/}=$(cat "$file")"; fi
  done
  pid=$(ctr --address "$address" -n paddock task ls | awk -v id="$id" '$1 == id {print $2}')
  if [ -n "$pid" ]; then
    # The loop volume's filesystem is larger than the quota; what the app may still write is
    # the available space.
    line="$line disk quota=$(df -h "/proc/$pid/root/home/vcap" | awk 'NR==2 {print $3 "+" $4 " (used+available)"}')"
  fi
  echo "$line"
done

step "the shims serving them (containerd-shim-paddock-v2: pid, resident KiB)"
for p in /proc/[0-9]*; do
  [ "$(readlink "$p/exe" 2>/dev/null)" != "" ] || continue
  case $(readlink "$p/exe") in */containerd-shim-paddock-v2) ;; *) continue ;; esac
  tr '\0' ' ' <"$p/cmdline" | grep -qF -- "$address" || continue
  echo "${p#/proc/} $(awk '/^VmRSS/ {print $2 " KiB"}' "$p/status")"
done

step "paddock-stager logs hello --index 0"
"${stager[@]}" logs hello --index 0

step "paddock-stager stop hello"
"${stager[@]}" stop hello

step "what is left of the app: containers, cgroups, network namespaces, the bridge, port mappings"
echo "containers: $(ctr --address "$address" -n paddock containers ls -q | wc -l)," \
  "cgroup dirs: $( (find /sys/fs/cgroup/*/paddock/hello -maxdepth 0 2>/dev/null || true) | wc -l)," \
  "netns: $(ls /run/paddock-stager/netns 2>/dev/null | wc -l)," \
  "bridge paddock0: $(ip link show paddock0 >/dev/null 2>&1 && echo present || echo gone)," \
  "CNI nat rules: $(iptables -w -t nat -S | grep -c CNI || true)"
