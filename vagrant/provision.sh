#!/usr/bin/env bash
# Provisions the Debian 12 guest that runs paddock's cgroup v2 and project-quota tests.
# Idempotent; runs as root in the guest (Vagrant's provisioner), or in the image's chroot at
# build time (scripts/vm-image.sh, with --image: nothing is started or mounted then).
#
#   provision.sh [--image]   packages, settings, and the boot-time unit for the quota filesystems
#   provision.sh quota-fs    makes (once) and mounts the quota filesystems: loop images in the
#                            guest, ext4 at /srv/quota/ext4 and XFS at /srv/quota/xfs, prjquota
set -euo pipefail

QUOTA_DIR=/srv/quota
IMAGES=/var/lib/paddock-vm

quota_fs() {
  mkdir -p "$IMAGES" "$QUOTA_DIR/ext4" "$QUOTA_DIR/xfs"
  if [ ! -e "$IMAGES/ext4.img" ]; then
    truncate -s 1G "$IMAGES/ext4.img.new"
    mkfs.ext4 -q -F -O quota,project -E quotatype=usrquota:prjquota "$IMAGES/ext4.img.new"
    mv "$IMAGES/ext4.img.new" "$IMAGES/ext4.img"
  fi
  if [ ! -e "$IMAGES/xfs.img" ]; then
    truncate -s 1G "$IMAGES/xfs.img.new"
    mkfs.xfs -q -f "$IMAGES/xfs.img.new"
    mv "$IMAGES/xfs.img.new" "$IMAGES/xfs.img"
  fi
  mountpoint -q "$QUOTA_DIR/ext4" ||
    mount -o loop,prjquota,usrquota "$IMAGES/ext4.img" "$QUOTA_DIR/ext4"
  mountpoint -q "$QUOTA_DIR/xfs" ||
    mount -o loop,prjquota,usrquota "$IMAGES/xfs.img" "$QUOTA_DIR/xfs"
  chmod 0755 "$QUOTA_DIR/ext4" "$QUOTA_DIR/xfs"
  grep -E " $QUOTA_DIR/(ext4|xfs) " /proc/self/mountinfo
}

if [ "${1:-}" = quota-fs ]; then
  quota_fs
  exit 0
fi

image=false
[ "${1:-}" = --image ] && image=true

# What the integration tests use (scripts/install-deps.sh's list, less the host-only tools),
# the filesystems' tools, and what Vagrant needs of a guest.
pkgs=(containerd runc busybox-static jq acl e2fsprogs xfsprogs procps
      containernetworking-plugins iproute2 kmod util-linux sudo openssh-server rsync)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# containerd is started by the tests themselves, with their own state dirs.
systemctl disable containerd.service >/dev/null 2>&1 || true

install -m 0755 "$0" /usr/local/sbin/paddock-vm-provision
cat >/etc/systemd/system/paddock-quota-fs.service <<'UNIT'
[Unit]
Description=paddock test filesystems with project quota (ext4 and XFS, loop images)
After=local-fs.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/paddock-vm-provision quota-fs
[Install]
WantedBy=multi-user.target
UNIT
systemctl enable paddock-quota-fs.service >/dev/null 2>&1

if ! $image; then
  systemctl daemon-reload
  systemctl start paddock-quota-fs.service
  echo "provision: cgroup $(stat -fc %T /sys/fs/cgroup), kernel $(uname -r)"
fi
