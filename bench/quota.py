#!/usr/bin/env python3
"""What a disk quota adds to a sandbox's life, per backend, and what reading its usage costs.

Interleaved, in one run: `paddock run` (create -> start -> wait -> delete) of a busybox `true`
without a quota and with `io.paddock.disk` (256 MiB; and 1 MiB, Garden's published case) on
each backend that works on this machine (the project-quota backend needs a store on ext4/XFS
mounted with prjquota; where there is none, the probe's reason is printed). Then the cost of
`paddock events --stats` with and without a volume (the usage read is the difference).

Targets: <= 100 ms added by the loop backend, <= 5 ms by project quota. Not a test.
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


def bundle(base, name, disk, script):
    b = os.path.join(base, name)
    subprocess.run([os.path.join(REPO, "scripts/mkbundle.sh"), b, "--", "sh", "-c", script], check=True)
    with open(os.path.join(b, "config.json")) as f:
        spec = json.load(f)
    spec["annotations"] = {"io.paddock.app": "bench-quota"}
    if disk:
        spec["annotations"]["io.paddock.disk"] = disk
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(spec, f)
    return b


def timed(cmd, env):
    t = time.perf_counter_ns()
    r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    dt = (time.perf_counter_ns() - t) / 1e6
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paddock", default=os.environ.get("PADDOCK", benchlib.DEFAULT_PADDOCK))
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--project-store", help="a directory on a prjquota filesystem, to time project quota")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("quota.py: run as root")
    base = tempfile.mkdtemp(prefix="paddock-bench-quota-")
    root = os.path.join(base, "state")
    stores = {"loop": os.path.join(base, "store-loop")}
    if args.project_store:
        stores["project"] = args.project_store
    envs = {}
    for backend, store in stores.items():
        cfg = os.path.join(base, f"config-{backend}.toml")
        with open(cfg, "w") as f:
            f.write(f'[quota]\nstore = "{store}"\nbackend = "{backend}"\n')
        envs[backend] = dict(os.environ, PADDOCK_CONFIG=cfg)
    plain_env = envs["loop"]
    cases = [("none", None, plain_env, bundle(base, "none", None, "true"))]
    for backend, env in envs.items():
        for disk in ["256M", "1M"]:
            cases.append((f"{backend} {disk}", disk, env, bundle(base, f"{backend}-{disk}", disk, "true")))
    results = {name: [] for name, *_ in cases}
    try:
        for i in range(args.iterations + 5):
            order = cases[:]
            random.shuffle(order)
            for name, _, env, b in order:
                dt = timed([args.paddock, "--root", root, "run", "--bundle", b, f"q{i}"], env)
                if i >= 5:
                    results[name].append(dt)
        # Usage read: events --stats of a running sandbox with and without a volume.
        stats = {}
        for name, disk in [("none", None), ("loop 256M", "256M")]:
            b = bundle(base, f"idle-{name.replace(' ', '-')}", disk, "sleep 1000")
            sid = f"idle-{len(stats)}"
            subprocess.run([args.paddock, "--root", root, "run", "-d", "--bundle", b, sid], env=plain_env,
                           check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            stats[name] = [timed([args.paddock, "--root", root, "events", "--stats", sid], plain_env)
                           for _ in range(args.iterations)]
            subprocess.run([args.paddock, "--root", root, "delete", "--force", sid], env=plain_env, check=True)
    finally:
        for sid in ["idle-0", "idle-1"]:
            subprocess.run([args.paddock, "--root", root, "delete", "--force", sid], env=plain_env,
                           stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", base])
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"paddock run of busybox true, {args.iterations} interleaved iterations, median ms")
    for name in results:
        added = "" if name == "none" else f"   added {med[name] - med['none']:+.2f} ms"
        print(f"  {name:<14} {med[name]:7.2f}{added}")
    if "project" not in stores:
        print("  project quota: not timed (no --project-store on a prjquota filesystem; this kernel has no quota support)")
    s_none, s_disk = statistics.median(stats["none"]), statistics.median(stats["loop 256M"])
    print(f"events --stats: {s_none:.2f} ms without a volume, {s_disk:.2f} ms with one "
          f"(usage read {s_disk - s_none:+.2f} ms)")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "quota.json"), "w") as f:
        json.dump({"run_ms": results, "stats_ms": stats}, f)


if __name__ == "__main__":
    main()
