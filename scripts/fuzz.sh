#!/usr/bin/env bash
# Fuzzes the create-time parsing of an untrusted caller's input (sandbox id, OCI spec,
# io.paddock.* annotations, cgroupsPath, seccomp profile) with cargo fuzz for a bounded time.
# Not part of the test command. Usage: scripts/fuzz.sh [SECONDS]   (default 120)
# Findings land in fuzz/artifacts/policy/; each one becomes a unit test in runtime/src.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
seconds=${1:-120}
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, got '$seconds'" >&2; exit 2 ;; esac

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# libFuzzer's instrumentation needs unstable rustc flags: a nightly toolchain when there is
# one, else the stable compiler with its unstable features unlocked.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

corpus=fuzz/corpus/policy
mkdir -p "$corpus"
cp -n fuzz/seeds/* "$corpus"/
"${fuzz[@]}" run policy "$corpus" -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048
echo "fuzz.sh: no finding in ${seconds}s ($(ls "$corpus" | wc -l) inputs in the corpus)"
