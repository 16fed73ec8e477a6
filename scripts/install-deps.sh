#!/usr/bin/env bash
# Installs the Debian packages paddock's build, tests, demo and benchmarks use. Idempotent:
# packages already present are left alone, and apt's lists are refreshed only when needed.
set -euo pipefail
pkgs=(containerd runc crun busybox-static hyperfine jq acl e2fsprogs python3 procps
      containernetworking-plugins iproute2 curl)
pkgs+=(gcc libc6-dev)   # the escape suite builds its static attack helper
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  command -v cargo >/dev/null 2>&1 || { echo "install-deps: cargo (Rust toolchain) not found" >&2; exit 1; }
fi
