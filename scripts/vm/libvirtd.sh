#!/usr/bin/env bash
# Starts libvirtd (and virtlogd) by hand where no systemd runs them, configured for the
# Vagrant route: qemu runs as root, and libvirt makes no cgroups of its own on the host.
# Does nothing when libvirtd already answers.
set -euo pipefail
log() { echo "libvirtd: $*" >&2; }
if virsh -c qemu:///system version >/dev/null 2>&1; then
  exit 0
fi
conf=/etc/libvirt/qemu.conf
set_option() { # key, value
  if grep -qE "^#?\s*$1\s*=" "$conf"; then
    sed -i -E "s|^#?\s*$1\s*=.*|$1 = $2|" "$conf"
  else
    echo "$1 = $2" >>"$conf"
  fi
}
set_option user '"root"'
set_option group '"root"'
set_option cgroup_controllers '[ ]'
mkdir -p /run/libvirt
pgrep -x virtlogd >/dev/null || virtlogd -d
libvirtd -d
for _ in $(seq 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && { log "started"; exit 0; }
  sleep 0.2
done
log "libvirtd did not answer on qemu:///system"
exit 1
