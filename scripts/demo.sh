#!/usr/bin/env bash
# paddock's main job, end to end: build paddock, prepare a sample app (examples/hello) as an
# OCI bundle, launch two instances of it in sandboxes, show what each sees and the limits it
# lives under, then stop everything and show that nothing is left.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root" >&2; exit 1; }
scripts/install-deps.sh
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building paddock"
cargo build -q --locked -p paddock-runtime --bin paddock
paddock=$PWD/target/debug/paddock
work=$(mktemp -d /tmp/paddock-demo.XXXXXX)
root=$work/state
ids=()
cleanup() {
  for id in "${ids[@]}"; do "$paddock" --root "$root" delete --force "$id" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step "preparing the app bundle (busybox rootfs + examples/hello/app.sh, 64 MiB, 32 pids, 64 MiB disk)"
bundle=$work/hello
scripts/mkbundle.sh "$bundle" --memory 67108864 --pids 32 -- /app/app.sh
mkdir -p "$bundle/rootfs/app"
cp examples/hello/app.sh "$bundle/rootfs/app/"
jq '.annotations = {"io.paddock.app": "hello", "io.paddock.disk": "64M"}
    | .mounts += [{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                   "options": ["nosuid", "noexec", "nodev", "ro"]}]' \
   "$bundle/config.json" > "$work/config.json" && mv "$work/config.json" "$bundle/config.json"

for i in 0 1; do
  id=hello-$i
  step "launching $id: paddock run --detach"
  "$paddock" --root "$root" run --detach --bundle "$bundle" "$id" \
    </dev/null >"$work/$id.log" 2>&1
  ids+=("$id")
done
sleep 0.5
for id in "${ids[@]}"; do
  step "$id says"
  cat "$work/$id.log"
done

step "paddock list"
"$paddock" --root "$root" list
step "paddock ps hello-0"
"$paddock" --root "$root" ps hello-0
step "an HTTP request inside hello-1 (paddock exec … wget 127.0.0.1:8080)"
"$paddock" --root "$root" exec hello-1 wget -qO- http://127.0.0.1:8080/
step "a fork bomb in hello-0 stays inside its pids limit"
"$paddock" --root "$root" exec --detach hello-0 sh -c 'b() { b | b & }; b' </dev/null >/dev/null 2>&1
step "hello-1 tries to fill the disk: its 64 MiB volume at /home/vcap says no"
"$paddock" --root "$root" exec hello-1 sh -c 'dd if=/dev/zero of=/home/vcap/fill bs=1M count=100 2>&1 | grep -v records' || true
sleep 1
for id in "${ids[@]}"; do
  "$paddock" --root "$root" events --stats "$id" | jq -r --arg id "$id" \
    '"\($id): memory \(.data.memory.usage.usage / 1048576 | floor) MiB of \(.data.memory.usage.limit / 1048576) MiB, pids \(.data.pids.current) of \(.data.pids.limit), disk \(.data.disk.usage / 1048576 | floor) MiB of \(.data.disk.limit / 1048576) MiB"'
done
step "the host is fine: paddock kill --all hello-0 KILL, then delete both"
time "$paddock" --root "$root" kill --all hello-0 KILL
for id in "${ids[@]}"; do "$paddock" --root "$root" delete --force "$id"; done
ids=()
step "what is left of the app's cgroups, processes and state"
left=$( (find /sys/fs/cgroup/*/paddock/hello -maxdepth 0 2>/dev/null || true) | wc -l)
echo "cgroup dirs of app hello: $left; sandboxes: $("$paddock" --root "$root" list -q | wc -l)"
step "a one-shot run in the foreground keeps the exit code"
one=$work/once
scripts/mkbundle.sh "$one" -- sh -c 'echo "one-shot in $(hostname)"; exit 3'
set +e
"$paddock" --root "$root" run --bundle "$one" once </dev/null
echo "exit code: $?"
