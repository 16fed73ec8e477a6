#!/usr/bin/env bash
# Builds the VM group's test binaries here (cargo feature `vm`) and stages them, with the
# `paddock` and `containerd-shim-paddock-v2` binaries, in $PADDOCK_VM_STAGE (default
# target/vm-tests): bin/ and a list of "<crate dir> <binary>" lines that vagrant/run-tests.sh
# runs in the guest.
#
#   stage.sh                   the VM group
#   stage.sh --all             the VM group and every integration test of the tests crate
#   stage.sh --tests A,B       only the integration tests A and B of the tests crate (files
#                              tests/tests/A.rs ...), e.g. --tests containerd_shim,containerd_runc
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

quota_tests=(project_quota)
engine_tests=(vm_cgroup_v2 vm_cpu vm_disk vm_shim)
case "${1:-}" in
  --all) mapfile -t engine_tests < <(ls tests/tests/*.rs | xargs -n1 basename | sed 's/\.rs$//') ;;
  --tests)
    quota_tests=()
    IFS=, read -r -a engine_tests <<<"${2:-}"
    [ ${#engine_tests[@]} -gt 0 ] || { echo "vm-stage: --tests needs a list, e.g. --tests containerd_shim" >&2; exit 2; }
    for t in "${engine_tests[@]}"; do
      [ -f "tests/tests/$t.rs" ] || { echo "vm-stage: no test file tests/tests/$t.rs" >&2; exit 2; }
    done ;;
  "") ;;
  *) echo "vm-stage: unknown option $1 (--all, --tests A,B)" >&2; exit 2 ;;
esac

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
# The shim tests find containerd-shim-paddock-v2 next to paddock ($PADDOCK_BIN).
cargo build --locked --workspace --bins
bin=target/x86_64-unknown-linux-gnu/debug   # .cargo/config.toml names the target
cp "$bin/paddock" "$bin/containerd-shim-paddock-v2" "$stage/bin/"
if [ ${#quota_tests[@]} -gt 0 ]; then
  build quota -p paddock-quota --features vm $(printf -- '--test %s ' "${quota_tests[@]}")
fi
build tests -p paddock-tests --features vm $(printf -- '--test %s ' "${engine_tests[@]}")
echo "vm-stage: staged $(wc -l <"$stage/list") test binaries in $stage" >&2
