#!/usr/bin/env python3
"""CPU policy under load: how evenly busy instances share, how exactly caps hold, and what the
node-wide re-balancing adds to create.

Scenarios, each running busy loops (`while :; do :; done`) for --seconds (10 by default):
  equal-N    N busy instances of one app in mode equal, all on one CPU (spec cpus) so that
             they contend even on an idle node; N = 2 and 4.
  cap-N      N busy instances in mode cap on the whole pool: each gets (pool CPUs) / N.
  apps-2x2   2 apps x 2 busy instances in mode equal, all on one CPU: 1/2 per app, 1/4 each.
Shares are each instance's CPU time over the sum of the instances' (equal, apps: other work on
the node takes its part from the group as a whole, not from one instance), or over pool CPUs x
wall time (cap). Jain's fairness index = (sum x)^2 / (n sum x^2).
Create cost, interleaved: `paddock create` of an instance alone; of an equal instance next to K
equal neighbours (nothing to re-balance); of a capped one next to K capped (K quotas rewritten);
of an exclusive one next to K equal (K cpusets rewritten). Re-balancing cost = the difference
to the equal case. With --baseline, a paddock without the CPU policy is timed alone too.

Targets: Jain >= 0.99 in equal mode; each capped instance within 1/N +- 2 %; <= 2 ms added to
create by the re-balancing. Not a test: nothing is asserted.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib  # beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BUSY = "while :; do :; done"


class Node:
    def __init__(self, paddock, base, cpu_config=True):
        self.paddock = paddock
        self.base = base
        os.makedirs(base, exist_ok=True)
        self.root = os.path.join(base, "state")
        self.config = os.path.join(base, "config.toml")
        with open(self.config, "w") as f:
            if cpu_config:
                f.write(f'[cpu]\nstate_dir = "{os.path.join(base, "cpu")}"\n')
        self.env = dict(os.environ, PADDOCK_CONFIG=self.config)
        self.stdin = os.path.join(base, "stdin")
        open(self.stdin, "w").close()
        self.live = []
        self.bundles = {}

    def bundle(self, app, mode, cpus, script):
        key = (app, mode, cpus, script)
        if key in self.bundles:
            return self.bundles[key]
        b = os.path.join(self.base, f"b{len(self.bundles)}")
        subprocess.run([os.path.join(REPO, "scripts/mkbundle.sh"), b, "--", "sh", "-c", script],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(b, "config.json")) as f:
            spec = json.load(f)
        spec["annotations"] = {"io.paddock.app": app}
        if mode is not None:
            spec["annotations"]["io.paddock.cpu"] = mode
        if cpus is not None:
            spec["linux"].setdefault("resources", {})["cpu"] = {"cpus": cpus}
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(spec, f)
        self.bundles[key] = b
        return b

    def cmd(self, *args):
        # Files, not pipes: a sandbox inherits the stdio of `create` and would hold a pipe open.
        with tempfile.TemporaryFile(dir=self.base) as out, \
                tempfile.TemporaryFile(dir=self.base) as err, open(self.stdin, "rb") as inp:
            t = time.perf_counter_ns()
            r = subprocess.run([self.paddock, "--root", self.root, *args], env=self.env,
                               stdin=inp, stdout=out, stderr=err)
            dt = time.perf_counter_ns() - t
            out.seek(0)
            err.seek(0)
            if r.returncode != 0:
                raise RuntimeError(f"paddock {' '.join(args)}: {err.read().decode().strip()}")
            return dt, out.read().decode()

    def create(self, bundle, cid):
        dt, _ = self.cmd("create", "--bundle", bundle, cid)
        self.live.append(cid)
        return dt

    def run(self, bundle, cid):
        self.create(bundle, cid)
        self.cmd("start", cid)

    def delete(self, cid):
        self.cmd("delete", "--force", cid)
        self.live.remove(cid)

    def usage_ns(self, cid):
        _, out = self.cmd("events", "--stats", cid)
        return json.loads(out)["data"]["cpu"]["usage"]["total"]

    def cleanup(self):
        for cid in list(self.live):
            try:
                self.delete(cid)
            except RuntimeError as e:
                print(f"cleanup: {e}", file=sys.stderr)


def jain(xs):
    s = sum(xs)
    q = sum(x * x for x in xs)
    return s * s / (len(xs) * q) if q else 0.0


def online_cpus():
    n = 0
    with open("/sys/devices/system/cpu/online") as f:
        for part in f.read().strip().split(","):
            a, _, b = part.partition("-")
            n += int(b or a) - int(a) + 1
    return n


def busy_run(node, name, members, seconds):
    """members: [(app, mode, cpus)]; returns per-instance CPU seconds over `seconds`."""
    ids = []
    for i, (app, mode, cpus) in enumerate(members):
        cid = f"{name}-{i}"
        node.run(node.bundle(app, mode, cpus, BUSY), cid)
        ids.append(cid)
    time.sleep(1.0)  # settle: every loop running
    start = {c: node.usage_ns(c) for c in ids}
    t0 = time.perf_counter()
    time.sleep(seconds)
    end = {c: node.usage_ns(c) for c in ids}
    wall = time.perf_counter() - t0
    for c in ids:
        node.delete(c)
    return [(end[c] - start[c]) / 1e9 for c in ids], wall


def scenario_equal(node, n, seconds, out):
    used, wall = busy_run(node, f"eq{n}", [("bench-cpu-eq", "equal", "0")] * n, seconds)
    total = sum(used)
    shares = [u / total for u in used]
    out.append({"scenario": f"equal-{n}", "cpu_seconds": used, "wall": wall, "shares": shares,
                "jain": jain(used), "target": "jain >= 0.99"})


def scenario_cap(node, n, seconds, out):
    pool = online_cpus()
    used, wall = busy_run(node, f"cap{n}", [("bench-cpu-cap", "cap", None)] * n, seconds)
    shares = [u / (pool * wall) for u in used]
    worst = max(abs(s - 1 / n) for s in shares)
    out.append({"scenario": f"cap-{n}", "cpu_seconds": used, "wall": wall, "pool_cpus": pool,
                "shares": shares, "worst_deviation": worst, "jain": jain(used),
                "target": f"each within 1/{n} +- 0.02"})


def scenario_apps(node, seconds, out):
    members = [("bench-cpu-a1", "equal", "0")] * 2 + [("bench-cpu-a2", "equal", "0")] * 2
    used, wall = busy_run(node, "apps", members, seconds)
    total = sum(used)
    shares = [u / total for u in used]
    apps = [shares[0] + shares[1], shares[2] + shares[3]]
    out.append({"scenario": "apps-2x2", "cpu_seconds": used, "wall": wall, "shares": shares,
                "app_shares": apps, "jain": jain(used), "jain_apps": jain(apps),
                "target": "jain >= 0.99 (instances and apps)"})


def create_cost(node, neighbours, iterations, baseline=None):
    """Median create time: alone; next to K neighbours with nothing to re-balance (equal among
    equal); a capped instance among K capped (K quotas rewritten); an exclusive one among K
    equal (K cpusets rewritten). The re-balancing cost is the difference to the equal case,
    which has the same neighbours (and their monitors) but nothing to rewrite. Given a paddock
    built without the CPU policy, also its create time alone."""
    sleeper = "sleep 100000"
    equal = node.bundle("bench-cpu-cc", "equal", None, sleeper)
    capped = node.bundle("bench-cpu-cc", "cap", None, sleeper)
    excl = node.bundle("bench-cpu-cc", "exclusive:1", None, sleeper)
    # kind -> (bundle of the timed create, bundle of its neighbours or None)
    plans = {"alone": (equal, None), "equal": (equal, equal), "cap": (capped, capped),
             "exclusive": (excl, equal)}
    samples = {k: [] for k in plans}
    if baseline is not None:
        samples["baseline"] = []
        plain = baseline.bundle("bench-cpu-cc", None, None, sleeper)
    kinds = list(samples)
    for _ in range(2):  # warm-up
        node.create(equal, "cc-w")
        node.delete("cc-w")
        if baseline is not None:
            baseline.create(plain, "cc-w")
            baseline.delete("cc-w")
    for it in range(iterations):
        random.shuffle(kinds)
        for kind in kinds:
            if kind == "baseline":
                samples[kind].append(baseline.create(plain, "cc") / 1e6)
                baseline.delete("cc")
                continue
            timed, nb = plans[kind]
            if nb is not None:
                for i in range(neighbours):
                    node.run(nb, f"cc-n{i}")
            samples[kind].append(node.create(timed, "cc") / 1e6)
            node.delete("cc")
            if nb is not None:
                for i in range(neighbours):
                    node.delete(f"cc-n{i}")
    return {k: {"median_ms": statistics.median(v), "samples_ms": v} for k, v in samples.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paddock", default=os.environ.get("PADDOCK", benchlib.DEFAULT_PADDOCK))
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--neighbours", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--out", default=os.path.join(HERE, "out", "cpu.json"))
    ap.add_argument("--baseline", help="a paddock built without the CPU policy, to time its create")
    ap.add_argument("--only", choices=["shares", "create"], help="run one part only")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("cpu.py: run as root")
    base = tempfile.mkdtemp(prefix="paddock-bench-cpu-")
    node = Node(args.paddock, base)
    baseline = Node(args.baseline, os.path.join(base, "baseline"), False) if args.baseline else None
    results = []
    cost = None
    try:
        if args.only != "create":
            for n in (2, 4):
                scenario_equal(node, n, args.seconds, results)
            for n in (2, 4):
                scenario_cap(node, n, args.seconds, results)
            scenario_apps(node, args.seconds, results)
        if args.only != "shares":
            cost = create_cost(node, args.neighbours, args.iterations, baseline)
    finally:
        node.cleanup()
        if baseline is not None:
            baseline.cleanup()
        subprocess.run(["rm", "-rf", base])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"results": results, "create": cost, "host": os.uname().nodename,
                   "seconds": args.seconds}, f, indent=1)
    print(f"CPU policy, {args.seconds:g} s per scenario, {online_cpus()} CPUs "
          "(equal and apps scenarios on CPU 0)")
    for r in results:
        shares = " ".join(f"{s * 100:.1f}%" for s in r["shares"])
        extra = ""
        if "worst_deviation" in r:
            extra = f"  worst |share - 1/N| {r['worst_deviation'] * 100:.2f} pt"
        if "app_shares" in r:
            extra = "  apps " + " ".join(f"{s * 100:.1f}%" for s in r["app_shares"])
            extra += f"  jain(apps) {r['jain_apps']:.4f}"
        print(f"  {r['scenario']:<9} shares {shares}  jain {r['jain']:.4f}{extra}   [{r['target']}]")
    if cost:
        m = {k: v["median_ms"] for k, v in cost.items()}
        k = args.neighbours
        print(f"  create, median of {args.iterations}: alone {m['alone']:.2f} ms; next to {k} "
              f"equal (nothing to re-balance) {m['equal']:.2f} ms; cap next to {k} capped "
              f"{m['cap']:.2f} ms; exclusive next to {k} equal {m['exclusive']:.2f} ms")
        print(f"  re-balancing adds: {k} quotas {m['cap'] - m['equal']:+.2f} ms, "
              f"{k} cpusets {m['exclusive'] - m['equal']:+.2f} ms   [<= +2 ms]")
        if "baseline" in m:
            print(f"  create alone without the CPU policy ({args.baseline}): "
                  f"{m['baseline']:.2f} ms; with it {m['alone']:.2f} ms "
                  f"({m['alone'] - m['baseline']:+.2f})")
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
