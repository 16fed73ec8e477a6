#!/usr/bin/env python3
"""OOM notification latency: from the kernel's OOM kill to the event line of `paddock events`.

The kernel side is timestamped by the `oom:mark_victim` tracepoint (tracefs, trace_clock
mono); the paddock side by CLOCK_MONOTONIC when this script reads the `{"type":"oom"}` line
from `paddock events`' stdout. A sandbox under policy `kernel` runs hogs one after another,
each OOM-killed by its 32 MiB limit. Lost and spurious events are counted against the
cgroup's own `oom_kill` counter; a second phase checks that sandboxes that merely stop
produce no OOM event at all.

Not a test: it prints figures and writes bench/out/oom.json.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import benchlib  # beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
APP = "bench-oom"


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def mono():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class Tracer:
    """oom:mark_victim with monotonic timestamps, on a private tracefs mount."""

    def __init__(self, base):
        self.dir = os.path.join(base, "tracefs")
        os.makedirs(self.dir)
        sh("mount", "-t", "tracefs", "nodev", self.dir)
        self.write("trace_clock", "mono")
        self.write("trace", "")
        self.write("events/oom/mark_victim/enable", "1")

    def write(self, name, value):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(value)

    def victims(self):
        out = []
        with open(os.path.join(self.dir, "trace")) as f:
            for line in f:
                if "mark_victim:" not in line:
                    continue
                head = line.split("mark_victim:")[0].strip().rstrip(":")
                out.append(float(head.split()[-1]))
        return out

    def close(self):
        try:
            self.write("events/oom/mark_victim/enable", "0")
            self.write("trace", "")
        finally:
            subprocess.run(["umount", self.dir])


def bundle(base, name, script, policy):
    b = os.path.join(base, name)
    sh(os.path.join(REPO, "scripts/mkbundle.sh"), b, "--memory", str(32 << 20), "--", "sh", "-c", script)
    with open(os.path.join(b, "config.json")) as f:
        spec = json.load(f)
    spec["annotations"] = {"io.paddock.app": APP, "io.paddock.oom": policy}
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(spec, f)
    return b


class Events:
    """`paddock events` in the background; records (monotonic time, line) per OOM line."""

    def __init__(self, paddock, root, sid):
        self.proc = subprocess.Popen([paddock, "--root", root, "events", "--interval", "3600", sid],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.ooms = []
        self.stats_seen = threading.Event()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        for line in self.proc.stdout:
            t = mono()
            ev = json.loads(line)
            if ev.get("type") == "oom":
                self.ooms.append(t)
            elif ev.get("type") == "stats":
                self.stats_seen.set()

    def finish(self):
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(timeout=5)


def counter(sid):
    path = f"/sys/fs/cgroup/memory/paddock/{APP}/{sid}/memory.oom_control"
    if not os.path.exists(path):
        path = f"/sys/fs/cgroup/paddock/{APP}/{sid}/memory.events"
    with open(path) as f:
        for line in f:
            k, v = line.split()
            if k == "oom_kill":
                return int(v)
    return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paddock", default=os.environ.get("PADDOCK", benchlib.DEFAULT_PADDOCK))
    ap.add_argument("--ooms", type=int, default=200)
    ap.add_argument("--stops", type=int, default=100, help="plain stop/delete cycles checked for spurious events")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("oom.py: run as root")
    base = tempfile.mkdtemp(prefix="paddock-bench-oom-")
    root = os.path.join(base, "state")
    tracer = Tracer(base)
    result = {}
    try:
        script = (f"i=0; while [ $i -lt {args.ooms} ]; do (x=a; while :; do x=\"$x$x\"; done); "
                  "sleep 0.02; i=$((i+1)); done; sleep 1000")
        b = bundle(base, "hog", script, "kernel")
        sid = "oom-bench"
        sh(args.paddock, "--root", root, "create", "--bundle", b, sid,
           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ev = Events(args.paddock, root, sid)
        ev.stats_seen.wait(5)
        sh(args.paddock, "--root", root, "start", sid)
        deadline = time.time() + 120
        while counter(sid) < args.ooms and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        kills = counter(sid)
        kernel = tracer.victims()
        sh(args.paddock, "--root", root, "delete", "--force", sid)
        ev.finish()
        reported = len(ev.ooms)
        n = min(len(kernel), reported)
        lat = [(ev.ooms[i] - kernel[i]) * 1000 for i in range(n)]
        result["oom"] = {
            "kills_counted_by_cgroup": kills,
            "victims_traced": len(kernel),
            "events_reported": reported,
            "lost": max(0, kills - reported),
            "spurious": max(0, reported - kills),
            "latency_ms": {"median": statistics.median(lat) if lat else None,
                           "p99": pct(lat, 99) if lat else None,
                           "max": max(lat) if lat else None},
        }
        # Phase 2: sandboxes that merely stop, ids and cgroup paths reused.
        quiet = bundle(base, "quiet", "sleep 1000", "kill")
        spurious = 0
        for _ in range(args.stops):
            sh(args.paddock, "--root", root, "run", "-d", "--bundle", quiet, "reuse",
               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            e = Events(args.paddock, root, "reuse")
            e.stats_seen.wait(5)
            sh(args.paddock, "--root", root, "delete", "--force", "reuse")
            e.finish()
            spurious += len(e.ooms)
        result["stops"] = {"cycles": args.stops, "spurious": spurious}
    finally:
        tracer.close()
        subprocess.run([args.paddock, "--root", root, "delete", "--force", "oom-bench"], stderr=subprocess.DEVNULL)
        subprocess.run([args.paddock, "--root", root, "delete", "--force", "reuse"], stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", base])
    o = result["oom"]
    print(f"OOM kills: {o['kills_counted_by_cgroup']} counted by the cgroup, {o['victims_traced']} traced, "
          f"{o['events_reported']} reported by paddock events")
    print(f"latency kill -> event: median {o['latency_ms']['median']:.2f} ms, p99 {o['latency_ms']['p99']:.2f} ms, "
          f"max {o['latency_ms']['max']:.2f} ms   (targets: median <= 5 ms, p99 <= 20 ms)")
    print(f"lost {o['lost']}, spurious {o['spurious']}; plain stops: {result['stops']['cycles']} cycles, "
          f"{result['stops']['spurious']} spurious   (targets: 0, 0)")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "oom.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
