#!/usr/bin/env bash
# Boots the cached Debian 12 guest (scripts/vm/image.sh) under qemu TCG, runs the staged test
# binaries in it (vagrant/run-tests.sh, from this checkout shared read-only over 9p at the same
# path), streams the output and exits with the guest's exit code.
#
#   scripts/vm/run.sh [TEST-BINARY-ARGS...]    e.g. a test-name filter
#
# Environment: PADDOCK_VM_CACHE (image cache), PADDOCK_VM_TIMEOUT (seconds, default 3600),
# PADDOCK_VM_CPUS (default 2), PADDOCK_VM_MEM (MiB, default 2048), PADDOCK_VM_NICE (default
# 10: the emulated CPUs yield to the host's own builds and tests).
#
# qemu runs as an ordinary process: it mounts nothing, makes no cgroup and no loop device on
# the host (the guest's are its own), so it needs no test lock.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
log() { echo "vm-run: $*" >&2; }
[ -s target/vm-tests/list ] || { log "target/vm-tests/list is missing: run scripts/vm-test.sh"; exit 2; }
command -v qemu-system-x86_64 >/dev/null || { log "qemu-system-x86_64 not found (scripts/vm/deps.sh)"; exit 2; }

image=$(scripts/vm/image.sh)
run=$(mktemp -d "${TMPDIR:-/tmp}/vm-run.XXXXXX")
qemu_pid=
cleanup() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null
  rm -rf "$run"
}
trap cleanup EXIT
mkdir "$run/out"
printf '%s\n' "$@" >"$run/out/args"
# The cached image stays pristine: every run writes to its own overlay.
qemu-img create -q -f qcow2 -b "$image/disk.qcow2" -F qcow2 "$run/disk.qcow2"

# /dev/kvm on this machine kind is a nested hypervisor that cannot run a stock kernel:
# software emulation, one host thread per guest CPU. PADDOCK_VM_ACCEL=kvm where KVM works.
accel=${PADDOCK_VM_ACCEL:-tcg,thread=multi}
cpu=max
[ "${accel%%,*}" = kvm ] && cpu=host
started=$(date +%s)
log "booting $image ($accel)"
timeout --foreground -k 10 "${PADDOCK_VM_TIMEOUT:-3600}" \
  nice -n "${PADDOCK_VM_NICE:-10}" qemu-system-x86_64 -accel "$accel" -cpu "$cpu" \
    -smp "${PADDOCK_VM_CPUS:-2}" -m "${PADDOCK_VM_MEM:-2048}" \
    -display none -monitor none -serial stdio -no-reboot -nic none \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 quiet loglevel=3 systemd.show_status=0 paddock.vmtest paddock.repo=$repo" \
    -drive "file=$run/disk.qcow2,if=virtio,format=qcow2,cache=unsafe" \
    -virtfs "local,path=$repo,mount_tag=repo,security_model=none,readonly=on" \
    -virtfs "local,path=$run/out,mount_tag=out,security_model=none" \
    </dev/null &
qemu_pid=$!
wait "$qemu_pid" && qrc=0 || qrc=$?
qemu_pid=
log "guest ran for $(( $(date +%s) - started ))s (qemu exit $qrc)"
if [ ! -s "$run/out/rc" ]; then
  log "the guest reported no exit code (timeout or boot failure)"
  exit 3
fi
rc=$(cat "$run/out/rc")
log "guest tests exit code $rc"
exit "$rc"
