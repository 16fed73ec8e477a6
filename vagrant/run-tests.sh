#!/usr/bin/env bash
# Runs the staged test binaries ($PADDOCK_VM_STAGE, default target/vm-tests, made by
# scripts/vm/stage.sh on the host) in
# the guest, as root, one test at a time, and exits non-zero if any failed. Used by both
# routes: the plain-qemu runner (scripts/vm/run.sh) and Vagrant (scripts/vagrant-test.sh).
#
#   run-tests.sh [ARGS_FILE]   ARGS_FILE: extra arguments for every test binary (a name
#                              filter, --exact, ...), one per line
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
args=()
if [ -n "${1:-}" ] && [ -s "$1" ]; then
  mapfile -t args <"$1"
  # The plain-qemu runner names its stage in a file next to the arguments.
  [ -s "$(dirname "$1")/stage" ] && PADDOCK_VM_STAGE=$(cat "$(dirname "$1")/stage")
fi
stage=$repo/${PADDOCK_VM_STAGE:-target/vm-tests}

fail() { echo "run-tests: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || fail "run as root"
[ -s "$stage/list" ] || fail "$stage/list is missing: build the binaries on the host (scripts/vm-test.sh)"
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || fail "/sys/fs/cgroup is not cgroup v2"
if ! grep -q ' /srv/quota/xfs ' /proc/self/mountinfo; then
  /usr/local/sbin/paddock-vm-provision quota-fs >/dev/null || fail "quota filesystems"
fi

echo "run-tests: kernel $(uname -r), cgroup v2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
grep -E ' /srv/quota/(ext4|xfs) ' /proc/self/mountinfo | awk '{print "run-tests: " $5 " " $(NF-2) " " $NF}'

# What the VM group reads: the paddock binary under test, the slowness of the guest, the
# project-quota filesystems.
export PADDOCK_BIN=$stage/bin/paddock
export PADDOCK_TEST_TIME_SCALE=${PADDOCK_TEST_TIME_SCALE:-20}
export PADDOCK_QUOTA_PROJECT_STORES=/srv/quota/ext4:/srv/quota/xfs
export RUST_BACKTRACE=1

# Every output line with the seconds since its binary started: a test's line is complete
# ("test NAME ... ok") when the test ends, so consecutive stamps give each test's time.
stamp() {
  local t0=$SECONDS line
  while IFS= read -r line || [ -n "$line" ]; do
    printf '[%5ds] %s\n' $((SECONDS - t0)) "$line"
  done
}

failed=()
total_start=$(date +%s)
while read -r crate_dir name; do
  [ -n "$name" ] || continue
  start=$(date +%s)
  echo "run-tests: === $name (${args[*]:-all})"
  (cd "$repo/$crate_dir" && "$stage/bin/$name" --test-threads=1 "${args[@]}") 2>&1 | stamp
  rc=${PIPESTATUS[0]}
  echo "run-tests: === $name rc=$rc in $(( $(date +%s) - start ))s"
  [ $rc -eq 0 ] || failed+=("$name")
done <"$stage/list"

# What the host's scripts/test.sh checks too: nothing of paddock's left in the guest.
left=$( { find /sys/fs/cgroup/paddock -mindepth 1 -type d 2>/dev/null
          grep paddock /proc/self/mountinfo | grep -v -E ' /srv/quota/| 9p ' | awk '{print "mount " $5}'
          losetup -a | grep paddock | grep -v -E '/var/lib/paddock-vm/' ; } | sed '/^$/d')
if [ -n "$left" ]; then
  echo "run-tests: left behind:"; echo "$left"
  failed+=("leftovers")
fi
echo "run-tests: total $(( $(date +%s) - total_start ))s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "run-tests: FAILED: ${failed[*]}"
  exit 1
fi
echo "run-tests: all passed"
