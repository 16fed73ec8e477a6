#!/usr/bin/env bash
# Host packages the VM routes use: debootstrap, qemu-system-x86 (from bookworm-backports, to
# match the qemu-utils this machine kind ships), jq. With --vagrant, also Vagrant,
# vagrant-libvirt and libvirt. Idempotent.
set -euo pipefail
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
export DEBIAN_FRONTEND=noninteractive
updated=false
update() { $updated || { apt-get update -qq; updated=true; }; }

if ! installed qemu-system-x86; then
  if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat >/etc/apt/sources.list.d/bookworm-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  update
  # qemu-utils, when present, comes from backports; qemu-system-x86 must match it.
  target=()
  dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo12 && target=(-t bookworm-backports)
  apt-get install -y -qq --no-install-recommends "${target[@]}" qemu-system-x86 >/dev/null
fi
pkgs=(debootstrap jq e2fsprogs qemu-utils)
[ "${1:-}" = --vagrant ] && pkgs+=(vagrant vagrant-libvirt libvirt-daemon-system
  libvirt-daemon-driver-qemu libvirt-clients dnsmasq-base iptables ebtables)
missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  update
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
