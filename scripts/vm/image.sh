#!/usr/bin/env bash
# Builds the Debian 12 guest (cgroup v2, a kernel with ext4/XFS project quota) from Debian
# packages alone: debootstrap with linux-image-amd64 into a directory, then an ext4 disk image
# made from that directory by `mkfs.ext4 -d` (no loop mount), converted to qcow2. The kernel
# and initrd are copied out for direct boot. Cached in $PADDOCK_VM_CACHE (default
# /var/cache/paddock-vm) under the hash of this script and vagrant/provision.sh; prints the
# image's directory (disk.qcow2, vmlinuz, initrd.img) on stdout.
#
# debootstrap and apt run in a private mount and pid namespace: the proc/sys mounts they make
# in the chroot never show in the host's mount table, and no daemon a package starts outlives
# the build.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
cache=${PADDOCK_VM_CACHE:-/var/cache/paddock-vm}
mirror=${PADDOCK_VM_MIRROR:-http://deb.debian.org/debian}
key=$(cat scripts/vm/image.sh vagrant/provision.sh | sha256sum | cut -c1-16)
out=$cache/debian12-$key
log() { echo "vm-image: $*" >&2; }

if [ -e "$out/done" ]; then
  echo "$out"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  log "run as root (debootstrap needs it)"
  exit 1
fi
for tool in debootstrap mkfs.ext4 qemu-img unshare; do
  command -v "$tool" >/dev/null || { log "$tool not found (scripts/vm/deps.sh installs it)"; exit 1; }
done

mkdir -p "$cache"
work=$(mktemp -d "$cache/build-XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
started=$(date +%s)
log "building $out (debootstrap from $mirror)"

# Stage 1: a minimal base that starts nothing. Stage 2, in the chroot: the kernel and the
# packages, with services forbidden to start (policy-rc.d).
unshare --mount --pid --fork --propagation private bash -euo pipefail -s "$root" "$mirror" "$repo" <<'STAGE'
root=$1 mirror=$2 repo=$3
debootstrap --variant=minbase --include=systemd-sysv,ca-certificates bookworm "$root" "$mirror" >/dev/null
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"
echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
cp "$repo/vagrant/provision.sh" "$root/tmp/provision.sh"
chroot "$root" /bin/bash -euo pipefail <<'CHROOT'
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends linux-image-amd64 udev dbus systemd-timesyncd- \
  ifupdown- isc-dhcp-client- >/dev/null
bash /tmp/provision.sh --image
apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/provision.sh
CHROOT
rm -f "$root/usr/sbin/policy-rc.d"
umount "$root/dev" "$root/sys" "$root/proc"
STAGE

# The guest's settings.
echo paddock-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 paddock-vm\n' >"$root/etc/hosts"
echo '/dev/vda / ext4 defaults,errors=remount-ro 0 1' >"$root/etc/fstab"
: >"$root/etc/resolv.conf"
cat >"$root/etc/systemd/network/80-dhcp.network" <<'NET'
[Match]
Name=en* eth*
[Network]
DHCP=ipv4
NET
chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
# Nothing periodic in a throwaway test guest.
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer \
            fstrim.timer systemd-networkd-wait-online.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# Root logs in on the serial console without a password (the guest has no other way in
# unless Vagrant's user below is used).
chroot "$root" passwd -d root >/dev/null
# Vagrant's conventions: user vagrant, password vagrant, the insecure key, sudo without a
# password.
chroot "$root" useradd -m -s /bin/bash vagrant
echo vagrant:vagrant | chroot "$root" chpasswd
install -d -m 0700 -o 1000 -g 1000 "$root/home/vagrant/.ssh"
echo 'ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure public key' \
  >"$root/home/vagrant/.ssh/authorized_keys"
chown 1000:1000 "$root/home/vagrant/.ssh/authorized_keys"
chmod 0600 "$root/home/vagrant/.ssh/authorized_keys"
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"
echo 'UseDNS no' >"$root/etc/ssh/sshd_config.d/vagrant.conf"

# The test run: when booted with paddock.vmtest, mount the host's checkout read-only at the
# same path (9p tag "repo"), a writable results directory (tag "out"), run the tests, write
# the exit code, power off.
cat >"$root/usr/local/sbin/paddock-vm-test" <<'RUN'
#!/bin/bash
set -u
repo=$(sed -n 's/.*paddock\.repo=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p "$repo" /run/paddock-vm-out
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose repo "$repo" &&
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /run/paddock-vm-out
rc=$?
if [ $rc -eq 0 ]; then
  cd "$repo" && bash vagrant/run-tests.sh /run/paddock-vm-out/args 2>&1 |
    tee /run/paddock-vm-out/log
  rc=${PIPESTATUS[0]}
fi
echo "$rc" >/run/paddock-vm-out/rc
sync
umount /run/paddock-vm-out "$repo" 2>/dev/null
systemctl poweroff --no-block
RUN
chmod 0755 "$root/usr/local/sbin/paddock-vm-test"
cat >"$root/etc/systemd/system/paddock-vm-test.service" <<'UNIT'
[Unit]
Description=paddock tests from the host's checkout (booted by scripts/vm/run.sh)
ConditionKernelCommandLine=paddock.vmtest
After=paddock-quota-fs.service network.target
Wants=paddock-quota-fs.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/paddock-vm-test
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable paddock-vm-test.service >/dev/null 2>&1
# The serial console shows the test output, not a login prompt, during test runs.
chroot "$root" systemctl mask serial-getty@ttyS0.service >/dev/null 2>&1

# Kernel and initrd for direct boot; the disk image from the tree, without mounting anything.
mkdir -p "$work/out"
cp "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)" "$work/out/vmlinuz"
cp "$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)" "$work/out/initrd.img"
mkfs.ext4 -q -F -L paddock-root -d "$root" "$work/root.raw" 6G
qemu-img convert -f raw -O qcow2 "$work/root.raw" "$work/out/disk.qcow2"
touch "$work/out/done"
rm -rf "$out"
mv "$work/out" "$out"
log "built $out in $(( $(date +%s) - started ))s"
echo "$out"
