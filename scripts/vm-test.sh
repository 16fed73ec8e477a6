#!/usr/bin/env bash
# The VM group: the tests that need cgroup v2 or ext4/XFS project quota, run for real in a
# Debian 12 guest under qemu (this machine kind has neither). Builds the test binaries here
# (scripts/vm/stage.sh), builds or reuses the cached guest image (scripts/vm/image.sh) and runs
# them there (scripts/vm/run.sh); the exit code is the guest's.
#
#   sudo scripts/vm-test.sh            the VM group (see README: Tests in a VM)
#   sudo scripts/vm-test.sh --all      the VM group and the whole integration suite, on cgroup v2
#   sudo scripts/vm-test.sh -- FILTER  only tests whose name contains FILTER
#   sudo scripts/vm-test.sh --tests containerd_shim,containerd_runc [-- FILTER]
#                                      only these integration test files, on cgroup v2
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "vm-test: run as root (the image build uses debootstrap)" >&2
  exit 1
fi
stage_args=()
case "${1:-}" in
  --all) stage_args=(--all); shift ;;
  --tests) stage_args=(--tests "${2:-}"); shift 2 || shift ;;
esac
[ "${1:-}" = -- ] && shift
scripts/vm/deps.sh
scripts/vm/stage.sh "${stage_args[@]}"
exec scripts/vm/run.sh "$@"
