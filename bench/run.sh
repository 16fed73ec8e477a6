#!/usr/bin/env bash
# paddock benchmarks, one entry point. Run as root on the node under test.
#
#   bench/run.sh                            build paddock (release) and run both benchmarks
#   PADDOCK=/path/to/paddock bench/run.sh   use that binary, no build
#   RUNTIMES=runc,crun bench/run.sh         leave paddock out (no build)
#
# Other knobs (environment): ITERATIONS (lifecycle, default 200), WARMUP (default 10),
# REPS (teardown repetitions, default 5), PYTHON (default Debian's /usr/bin/python3),
# LIFECYCLE_ARGS / TEARDOWN_ARGS (extra arguments, e.g. "--clean-stale" or "--seed 1").
# Results: bench/out/{lifecycle,teardown}.{json,txt}.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
die() { echo "run.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "must run as root (containers, cgroups, mount namespaces)"

# 1. packages (idempotent: only what is missing)
missing=()
for p in runc crun busybox-static jq python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "run.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=$(command -v python3)

# 2. paddock
RUNTIMES=${RUNTIMES:-paddock,runc,crun}
if [[ ",$RUNTIMES," == *,paddock,* ]]; then
  if [ -z "${PADDOCK:-}" ]; then
    command -v cargo >/dev/null || die "cargo not found; install Rust or give PADDOCK=/path/to/paddock"
    echo "run.sh: cargo build --release -p paddock-runtime" >&2
    (cd "$repo" && cargo build --release -p paddock-runtime)
    PADDOCK=$repo/target/x86_64-unknown-linux-gnu/release/paddock
  fi
  [ -x "$PADDOCK" ] || die "PADDOCK=$PADDOCK is not an executable"
  PADDOCK=$(cd "$(dirname "$PADDOCK")" && pwd)/$(basename "$PADDOCK")
  export PADDOCK
fi

# 3. benchmarks (each cleans up after itself, also on failure and Ctrl-C)
mkdir -p "$here/out"
rm -f "$here/out/lifecycle.txt" "$here/out/teardown.txt"
rc=0
# shellcheck disable=SC2086
"$PYTHON" "$here/lifecycle.py" --runtimes "$RUNTIMES" --iterations "${ITERATIONS:-200}" \
  --warmup "${WARMUP:-10}" ${LIFECYCLE_ARGS:-} >/dev/null || rc=$?     # tables: in the summary below
[ "$rc" -ge 128 ] && exit "$rc"          # interrupted: stop here
# shellcheck disable=SC2086
"$PYTHON" "$here/teardown.py" --runtimes "$RUNTIMES" --reps "${REPS:-5}" ${TEARDOWN_ARGS:-} >/dev/null || rc2=$?
rc2=${rc2:-0}
[ "$rc2" -ge 128 ] && exit "$rc2"
# paddock only: OOM notification latency (issue 2) and what a disk quota costs (issue 4)
extra=""
if [ -n "${PADDOCK:-}" ]; then
  "$PYTHON" "$here/oom.py" --paddock "$PADDOCK" > "$here/out/oom.txt" 2>&1 || rc2=1
  "$PYTHON" "$here/quota.py" --paddock "$PADDOCK" > "$here/out/quota.txt" 2>&1 || rc2=1
  extra="oom quota"
fi

# 4. summary
echo
echo "================================ summary ================================"
for f in lifecycle teardown $extra; do
  if [ -f "$here/out/$f.txt" ]; then
    cat "$here/out/$f.txt"
  else
    echo "$f: no results (see the errors above)"
  fi
  echo
done
echo "JSON: $here/out/lifecycle.json $here/out/teardown.json"
[ "$rc" -eq 0 ] && [ "$rc2" -eq 0 ]
