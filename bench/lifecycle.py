#!/usr/bin/env python3
"""Lifecycle benchmark: create -> start -> wait -> delete of one busybox bundle running
`sh -c 'echo hi'` (memory limit 64 MiB, pids limit 64), for paddock, runc and crun
interleaved in one run: every iteration runs every runtime once, in a shuffled (or
rotating) order, after a warm-up. Prints median/p90 per phase and the paddock/runc,
paddock/crun ratios of the medians; writes bench/out/lifecycle.json.

Run as root:  bench/lifecycle.py [--runtimes paddock,runc,crun] [--iterations 200]
See bench/README.md and the docstring of benchlib.py (how "wait" is measured, crun's
mount namespace, cleanup).
"""

import argparse
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

PHASES = ("total", "create", "start", "wait", "delete")
TARGETS = {"paddock/runc": 0.5, "paddock/crun": 1.0}


def cycle(sess, rt, bundle, config, label, probe=None):
    """One create/start/wait/delete. Returns {phase: ns}; raises BenchError on any failure."""
    cid = "lc-%s-%s" % (rt.name, label)
    cgpath = "/%s/%s-%s" % (bl.CG_PARENT, rt.name, label)
    bl.set_cgroups_path(bundle, config, cgpath)
    pidfile = os.path.join(sess.tmp, rt.name + ".pid")
    try:
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
    outpath = os.path.join(sess.io_dir, rt.name + ".out")
    out = os.open(outpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    off = rt.err_offset()
    watch = None
    perf = time.perf_counter_ns
    rt.live.add(cid)
    try:
        with rt.ctx():
            t0 = perf()
            rc = rt.run(["create", "--bundle", bundle, "--pid-file", pidfile, cid], stdout=out)
            t1 = perf()
            rt.check(rc, "create", off)
            watch = rt.watch_init(pidfile, off)
            pid = watch.pid
            t2 = perf()
            if probe is not None:
                probe_after_create(sess, rt, pid, cgpath, probe)
                t2 = perf()
            rc = rt.run(["start", cid])
            t3 = perf()
            rt.check(rc, "start", off)
            if not watch.wait(30):
                raise bl.BenchError("%s: container init (pid %d) still running 30 s after start" % (rt.name, pid))
            t4 = perf()
            rc = rt.run(["delete", cid])
            t5 = perf()
            rt.check(rc, "delete", off)
        rt.live.discard(cid)
    finally:
        os.close(out)
        if cid in rt.live:
            rt.force_delete(cid, watch)
        if watch is not None:
            watch.close()
    # post-conditions (outside the timed region, back in the host mount namespace)
    with open(outpath) as f:
        got = f.read()
    if got != "hi\n":
        raise bl.BenchError("%s: container stdout was %r, expected 'hi\\n'; runtime log: %s"
                            % (rt.name, got, rt.err_since(off)))
    status = watch.status
    if status not in (None, "exit 0"):
        raise bl.BenchError("%s: container init ended with %s" % (rt.name, status))
    leaks = bl.cgroup_dirs(cgpath, sess.mounts)
    if os.path.exists(os.path.join(rt.root, cid)):
        leaks.append(os.path.join(rt.root, cid))
    return {"total": t5 - t0, "create": t1 - t0, "start": t3 - t2, "wait": t4 - t3, "delete": t5 - t4,
            "_leaks": leaks, "_status": status}


def probe_after_create(sess, rt, pid, cgpath, probe):
    """First warm-up only: is the init re-parented to the bench, which cgroup mounts got the cgroup."""
    try:
        with open("/proc/%d/status" % pid) as f:
            ppid = int([l for l in f if l.startswith("PPid:")][0].split()[1])
    except (OSError, IndexError, ValueError):
        ppid = None
    probe["init_adopted_by_bench"] = ppid == os.getpid()
    if rt.ns is None:
        probe["cgroup_in_unified"] = os.path.isdir(os.path.join(bl.UNIFIED, cgpath.lstrip("/")))
    probe["cgroup_mounts_used"] = len(bl.cgroup_dirs(cgpath, [m for m in sess.mounts if m != bl.UNIFIED]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtimes", help="comma list of paddock,runc,crun (default: all; paddock only if built)")
    ap.add_argument("--paddock", help="paddock binary (default $PADDOCK or target/x86_64-unknown-linux-gnu/release/paddock)")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10, help="warm-up iterations, not recorded (default 10)")
    ap.add_argument("--order", choices=("shuffle", "rotate"), default="shuffle")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--memory", type=int, default=64 << 20)
    ap.add_argument("--pids", type=int, default=64)
    ap.add_argument("--crun-ns", choices=("auto", "always", "never"), default="auto",
                    help="private mount namespace without the cgroup2 mount for crun (auto: on hybrid hosts)")
    ap.add_argument("--clean-stale", action="store_true", help="remove leftovers of an earlier run under /paddock-bench")
    ap.add_argument("--state-on-disk", action="store_true",
                    help="keep the runtimes' state roots in the temp dir on disk instead of a tmpfs")
    ap.add_argument("--out", default=os.path.join(bl.OUT_DIR, "lifecycle.json"))
    a = ap.parse_args()

    try:
        bins = bl.resolve_runtimes(a.runtimes, a.paddock)
    except bl.BenchError as e:
        bl.log("lifecycle: %s" % e)
        return 2
    rng, seed = bl.new_rng(a.seed)
    result = {
        "benchmark": "lifecycle",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": bl.host_info(),
        "config": {"iterations": a.iterations, "warmup": a.warmup, "order": a.order, "seed": seed,
                   "memory_limit": a.memory, "pids_limit": a.pids, "process": ["sh", "-c", "echo hi"],
                   "phases": list(PHASES),
                   "timing": "time.perf_counter_ns; total = create+start+wait+delete plus reading the pid file "
                             "and pidfd_open; wait = start returned -> pidfd readable + reap"},
        "targets": TARGETS,
        "runtimes": {},
    }
    failed_any = False
    try:
        with bl.Session(bins, crun_ns=a.crun_ns, clean_stale=a.clean_stale, tag="lifecycle",
                        state_tmpfs=not a.state_on_disk) as sess:
            result["notes"] = sess.notes
            result["spawn_baseline_ms"] = bl.spawn_baseline()
            data = {}
            for name, rt in sess.runtimes.items():
                bundle = os.path.join(sess.tmp, "bundle-" + name)
                cfg = bl.mkbundle(bundle, "/%s/%s-0" % (bl.CG_PARENT, name), a.memory, a.pids)
                data[name] = {"rt": rt, "bundle": bundle, "config": cfg, "samples": {p: [] for p in PHASES},
                              "failures": [], "leaks": [], "probe": {}, "status_unknown": 0}
                result["runtimes"][name] = {"binary": rt.binary, "version": rt.version()}
            active = list(sess.runtimes)

            def one(name, label, record, probe=None):
                d = data[name]
                try:
                    r = cycle(sess, d["rt"], d["bundle"], d["config"], label, probe)
                except (bl.BenchError, OSError) as e:
                    d["failures"].append({"iteration": label, "error": str(e)})
                    if len(d["failures"]) <= 3:
                        bl.log("lifecycle: %s iteration %s FAILED: %s" % (name, label, e))
                    return False
                if r["_leaks"]:
                    d["leaks"].append({"iteration": label, "left": r["_leaks"]})
                if r["_status"] is None:
                    d["status_unknown"] += 1
                if record:
                    for p in PHASES:
                        d["samples"][p].append(r[p])
                return True

            bl.log("lifecycle: runtimes %s, warm-up %d, iterations %d, order %s (seed %d)"
                   % (",".join(active), a.warmup, a.iterations, a.order, seed))
            for i in range(a.warmup):
                for name in bl.make_order(active, i, a.order, rng):
                    probe = data[name]["probe"] if i == 0 else None
                    if not one(name, "w%d" % i, False, probe) and name in active:
                        bl.log("lifecycle: dropping %s (failed during warm-up)" % name)
                        active.remove(name)
                        failed_any = True
                sess.reap_strays()
            if not active:
                raise bl.BenchError("every runtime failed during warm-up")
            step = max(1, a.iterations // 10)
            t_start = time.monotonic()
            for i in range(a.iterations):
                for name in bl.make_order(active, i, a.order, rng):
                    one(name, str(i), True)
                sess.reap_strays()
                if (i + 1) % step == 0:
                    bl.log("lifecycle: %d/%d (%.0f s)" % (i + 1, a.iterations, time.monotonic() - t_start))
            result["orphans_reaped"] = sess.strays_reaped   # e.g. paddock's per-sandbox monitor processes
            for name, d in data.items():
                rr = result["runtimes"][name]
                rr["completed"] = len(d["samples"]["total"])
                rr["dropped_in_warmup"] = name not in active
                rr["failures"] = d["failures"]
                rr["leaks"] = d["leaks"]
                rr["probe"] = d["probe"]
                rr["init_status_unknown"] = d["status_unknown"]
                rr["stats_ms"] = {p: bl.summarize_ns(d["samples"][p]) for p in PHASES}
                rr["samples_ns"] = d["samples"]
                if d["failures"]:
                    failed_any = True
    except KeyboardInterrupt:
        bl.log("lifecycle: interrupted; cleaned up")
        return 130
    except bl.BenchError as e:
        bl.log("lifecycle: %s" % e)
        return 1

    result["ratios"] = ratios(result["runtimes"])
    text = report(result)
    print(text, end="", flush=True)
    bl.write_text("lifecycle.txt", text)
    path = a.out
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    bl.log("lifecycle: results in %s" % path)
    return 1 if failed_any else 0


def med(rr, phase):
    s = (rr.get("stats_ms") or {}).get(phase)
    return s["median"] if s else None


def ratios(rts):
    out = {}
    if "paddock" not in rts:
        return out
    for other in ("runc", "crun"):
        if other in rts:
            out["paddock/" + other] = {
                p: (med(rts["paddock"], p) / med(rts[other], p)
                    if med(rts["paddock"], p) and med(rts[other], p) else None)
                for p in PHASES}
    return out


def report(res):
    c = res["config"]
    lines = []
    lines.append("lifecycle: create -> start -> wait -> delete, busybox sh -c 'echo hi', memory %d MiB, pids %d"
                 % (c["memory_limit"] >> 20, c["pids_limit"]))
    lines.append("%d iterations per runtime, interleaved (%s, seed %d), %d warm-up; ms, median / p90"
                 % (c["iterations"], c["order"], c["seed"], c["warmup"]))
    lines.append("host: %s, %s cpus, cgroup %s, load average at start %.2f"
                 % (res["host"]["kernel"], res["host"]["cpus"], res["host"]["cgroup_layout"], res["host"]["loadavg"][0]))
    lines.append("")
    hdr = "%-8s %5s " % ("runtime", "n") + " ".join("%-15s" % p for p in PHASES)
    lines.append(hdr)
    for name, rr in res["runtimes"].items():
        st = rr.get("stats_ms") or {}
        cells = []
        for p in PHASES:
            s = st.get(p)
            cells.append("%-15s" % ("%s / %s" % (bl.fmt_ms(s["median"]), bl.fmt_ms(s["p90"])) if s else "-"))
        lines.append("%-8s %5d " % (name, rr.get("completed", 0)) + " ".join(cells))
    if res["ratios"]:
        lines.append("")
        lines.append("%-14s " % "ratio (median)" + " ".join("%-8s" % p for p in PHASES) + "  target(total)")
        for k, v in res["ratios"].items():
            tot = v.get("total")
            verdict = "-" if tot is None else ("<= %.1f %s" % (TARGETS[k], "ok" if tot <= TARGETS[k] else "MISSED"))
            lines.append("%-14s " % k + " ".join("%-8s" % ("%.2f" % v[p] if v[p] else "-") for p in PHASES)
                         + "  " + verdict)
    lines.append("")
    lines.append("python spawn baseline (Popen+wait of /bin/true): %.2f ms per command; each cycle runs 3 "
                 "(create, start, delete), included in every runtime's figures alike" % res["spawn_baseline_ms"])
    for name, rr in res["runtimes"].items():
        extra = []
        if rr.get("failures"):
            extra.append("%d failures (first: %s)" % (len(rr["failures"]), rr["failures"][0]["error"]))
        if rr.get("leaks"):
            extra.append("%d cycles left cgroups/state behind (first: %s)"
                         % (len(rr["leaks"]), ", ".join(rr["leaks"][0]["left"])))
        if rr.get("dropped_in_warmup"):
            extra.append("dropped during warm-up")
        pr = rr.get("probe") or {}
        if "init_adopted_by_bench" in pr:
            extra.append("init re-parented to the bench: %s" % ("yes" if pr["init_adopted_by_bench"] else "NO"))
        if "cgroup_in_unified" in pr:
            extra.append("cgroup also created in %s: %s" % (bl.UNIFIED, "yes" if pr["cgroup_in_unified"] else "no"))
        if extra:
            lines.append("%s: %s" % (name, "; ".join(extra)))
    for n in res.get("notes", []):
        lines.append("note: " + n)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
