#!/usr/bin/env bash
# The VM group through Vagrant: builds and stages the test binaries (scripts/vm/stage.sh),
# brings up vagrant/Vagrantfile's guest, runs vagrant/run-tests.sh in it over `vagrant ssh`,
# destroys the guest and exits with the tests' exit code.
#
#   sudo scripts/vagrant-test.sh [--all] [-- FILTER]
#
# Provider: VirtualBox where it is installed (box debian/bookworm64), else libvirt. With
# libvirt and no $PADDOCK_VAGRANT_BOX, the box is made here from scripts/vm/image.sh's image
# (`vagrant box add` of a box holding its disk, kernel and initrd; nothing is downloaded), and
# libvirtd is started by hand if it is not running (no systemd needed): qemu runs as root,
# libvirt makes no cgroups of its own, and the domain uses software emulation ("qemu" driver),
# since this machine kind's /dev/kvm cannot run a stock kernel.
#
# The libvirt route adds a bridge, dnsmasq and NAT rules for Vagrant's management network and
# starts qemu through libvirtd: run it under the test lock on machines shared with the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
log() { echo "vagrant-test: $*" >&2; }
if [ "$(id -u)" -ne 0 ]; then
  log "run as root"
  exit 1
fi
stage_args=()
if [ "${1:-}" = --all ]; then stage_args=(--all); shift; fi
[ "${1:-}" = -- ] && shift
mkdir -p target
printf '%s\n' "$@" >target/vagrant-test-args

if command -v VBoxManage >/dev/null 2>&1 && [ -z "${VAGRANT_DEFAULT_PROVIDER:-}" ]; then
  export VAGRANT_DEFAULT_PROVIDER=virtualbox
else
  export VAGRANT_DEFAULT_PROVIDER=${VAGRANT_DEFAULT_PROVIDER:-libvirt}
fi
# Its own stage, so that a plain-qemu run of the group can go on meanwhile.
export PADDOCK_VM_STAGE=target/vagrant-tests
scripts/vm/deps.sh --vagrant
scripts/vm/stage.sh "${stage_args[@]}"

if [ "$VAGRANT_DEFAULT_PROVIDER" = libvirt ]; then
  scripts/vm/libvirtd.sh
  if [ -z "${PADDOCK_VAGRANT_BOX:-}" ]; then
    export PADDOCK_VAGRANT_BOX=paddock/debian12
    scripts/vm/box.sh "$PADDOCK_VAGRANT_BOX"
  fi
fi

cd vagrant
started=$(date +%s)
cleanup() { vagrant destroy -f >/dev/null 2>&1 || true; }
trap cleanup EXIT
log "vagrant up ($VAGRANT_DEFAULT_PROVIDER, box ${PADDOCK_VAGRANT_BOX:-debian/bookworm64})"
vagrant up --provision
log "guest up and provisioned in $(( $(date +%s) - started ))s"
rc=0
vagrant ssh -c "sudo PADDOCK_VM_STAGE=$PADDOCK_VM_STAGE bash $repo/vagrant/run-tests.sh $repo/target/vagrant-test-args" || rc=$?
log "tests exit code $rc, $(( $(date +%s) - started ))s in all"
exit "$rc"
