#!/usr/bin/env bash
# Builds the VM group's test binaries here (cargo feature `vm`) and stages them, with the
# `paddock` binary, in $PADDOCK_VM_STAGE (default target/vm-tests): bin/ and a list of "<crate dir> <binary>" lines that
# vagrant/run-tests.sh runs in the guest. With --all, every integration test of the tests
# crate is staged too.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

quota_tests=(project_quota)
engine_tests=(vm_cgroup_v2 vm_disk)
if [ "${1:-}" = --all ]; then
  mapfile -t engine_tests < <(ls tests/tests/*.rs | xargs -n1 basename | sed 's/\.rs$//')
fi

stage=${PADDOCK_VM_STAGE:-target/vm-tests}
rm -rf "$stage"
mkdir -p "$stage/bin"
: >"$stage/list"
build() { # crate dir, cargo arguments...
  local dir=$1; shift
  cargo test --locked --no-run --message-format=json "$@" |
    jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test) | .executable' |
    while read -r exe; do
      name=$(basename "$exe" | sed 's/-[0-9a-f]*$//')
      cp "$exe" "$stage/bin/$name"
      echo "$dir $name" >>"$stage/list"
    done
}
cargo build --locked -p paddock-runtime --bin paddock
cp target/debug/paddock "$stage/bin/paddock"
build quota -p paddock-quota --features vm $(printf -- '--test %s ' "${quota_tests[@]}")
build tests -p paddock-tests --features vm $(printf -- '--test %s ' "${engine_tests[@]}")
echo "vm-stage: staged $(wc -l <"$stage/list") test binaries in $stage" >&2
