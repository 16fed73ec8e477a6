#!/usr/bin/env bash
# Makes a Vagrant libvirt box named $1 from scripts/vm/image.sh's image and adds it
# (`vagrant box add`), unless the box of this very image is there already. The box holds the
# qcow2 disk, the kernel and the initrd; its own Vagrantfile boots them directly under software
# emulation (driver "qemu"), since the image has no boot loader.
set -euo pipefail
cd "$(dirname "$0")/../.."
name=$1
image=$(scripts/vm/image.sh)
key=$(basename "$image")
boxdir=${VAGRANT_HOME:-$HOME/.vagrant.d}/boxes/${name//\//-VAGRANTSLASH-}/0/libvirt
if [ "$(cat "$boxdir/paddock-image" 2>/dev/null)" = "$key" ]; then
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/paddock-box.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$image/disk.qcow2" "$work/box.img"
cp "$image/vmlinuz" "$image/initrd.img" "$work/"
echo "$key" >"$work/paddock-image"
size=$(qemu-img info --output=json "$work/box.img" | jq '."virtual-size" / 1073741824 | ceil')
echo "{\"provider\": \"libvirt\", \"format\": \"qcow2\", \"virtual_size\": $size}" >"$work/metadata.json"
cat >"$work/Vagrantfile" <<'BOX'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.driver = "qemu"
    lv.cpu_mode = "maximum"
    lv.kernel = File.join(__dir__, "vmlinuz")
    lv.initrd = File.join(__dir__, "initrd.img")
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 quiet"
    lv.disk_bus = "virtio"
  end
end
BOX
tar -C "$work" -cf "$work/paddock.box" metadata.json Vagrantfile box.img vmlinuz initrd.img paddock-image
vagrant box add --force --name "$name" "$work/paddock.box" >&2
echo "box: added $name from $image" >&2
