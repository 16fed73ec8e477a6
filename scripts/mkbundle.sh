#!/usr/bin/env bash
# Make an OCI bundle with a busybox root filesystem (from Debian's busybox-static).
# usage: mkbundle.sh DIR [--memory BYTES] [--pids N] [--cgroups-path P] [--tty] -- ARGS...
# Default process: sh -c 'echo hi'. The bundle's config.json is a plain runc-style spec.
set -euo pipefail
die() { echo "mkbundle: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: mkbundle.sh DIR [--memory BYTES] [--pids N] [--cgroups-path P] [--tty] [-- ARGS...]"
dir=$1; shift
memory=""; pids=""; cgpath=""; tty=false
while [ $# -gt 0 ]; do
  case $1 in
    --memory) memory=$2; shift 2 ;;
    --pids) pids=$2; shift 2 ;;
    --cgroups-path) cgpath=$2; shift 2 ;;
    --tty) tty=true; shift ;;
    --) shift; break ;;
    *) die "unknown option $1" ;;
  esac
done
[ $# -gt 0 ] || set -- sh -c 'echo hi'
busybox=$(command -v busybox) || die "busybox not found (apt-get install busybox-static)"
mkdir -p "$dir/rootfs"/{bin,proc,dev,sys,tmp,etc,home,root}
if [ ! -x "$dir/rootfs/bin/busybox" ]; then
  cp "$busybox" "$dir/rootfs/bin/busybox"
  for app in $("$busybox" --list); do
    [ -e "$dir/rootfs/bin/$app" ] || ln -s busybox "$dir/rootfs/bin/$app"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$dir/rootfs/etc/passwd"
  echo 'root:x:0:' > "$dir/rootfs/etc/group"
  chmod 1777 "$dir/rootfs/tmp"
fi
args_json=$(for a in "$@"; do printf '%s' "$a" | jq -Rs .; done | jq -cs .)
resources='{}'
[ -n "$memory" ] && resources=$(jq -n --argjson r "$resources" --argjson m "$memory" '$r + {memory: {limit: $m}}')
[ -n "$pids" ] && resources=$(jq -n --argjson r "$resources" --argjson p "$pids" '$r + {pids: {limit: $p}}')
jq -n --argjson args "$args_json" --argjson res "$resources" --arg cg "$cgpath" --argjson tty "$tty" '
{
  ociVersion: "1.0.2",
  process: {
    terminal: $tty,
    user: {uid: 0, gid: 0},
    args: $args,
    env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
    cwd: "/",
    capabilities: {
      bounding: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      effective: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      permitted: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    },
    rlimits: [{type: "RLIMIT_NOFILE", hard: 1024, soft: 1024}],
    noNewPrivileges: true
  },
  root: {path: "rootfs", readonly: true},
  hostname: "sandbox",
  mounts: [
    {destination: "/proc", type: "proc", source: "proc"},
    {destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"]},
    {destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"]},
    {destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777", "size=65536k"]}
  ],
  linux: ({
    resources: ({devices: [{allow: false, access: "rwm"}]} + $res),
    namespaces: [{type: "pid"}, {type: "network"}, {type: "ipc"}, {type: "uts"}, {type: "mount"}, {type: "cgroup"}],
    maskedPaths: ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
    readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
  } + (if $cg == "" then {} else {cgroupsPath: $cg} end))
}' > "$dir/config.json"
