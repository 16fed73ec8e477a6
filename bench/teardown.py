#!/usr/bin/env python3
"""Teardown benchmark: how long it takes to tear down a sandbox holding 1000 processes.

The bundle's init (busybox sh) starts 1000 background `sleep 1000` and waits; pids limit
1100, memory limit 1 GiB. Once the pids controller's cgroup.procs lists 1001 processes,
the bench times, in two modes:
  force: `delete --force ID`                                   (one command)
  kill:  `kill --all ID KILL`, wait for the init to exit, `delete ID`
for paddock, runc and crun, trials interleaved in a shuffled order, several repetitions;
reports median/p90. Target: paddock <= 50 ms.

Run as root:  bench/teardown.py [--runtimes paddock,runc,crun] [--reps 5]
"""

import argparse
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

MODES = ("force", "kill")
TARGET_MS = 50.0


def script(n):
    return "i=0; while [ $i -lt %d ]; do sleep 1000 & i=$((i+1)); done; wait" % n


def trial(sess, rt, bundle, config, mode, label, nprocs, fill_timeout, settle):
    cid = "td-%s-%s-%s" % (rt.name, mode, label)
    cgpath = "/%s/td-%s-%s-%s" % (bl.CG_PARENT, rt.name, mode, label)
    bl.set_cgroups_path(bundle, config, cgpath)
    pids_dir = os.path.join("/sys/fs/cgroup/pids", cgpath.lstrip("/"))
    pidfile = os.path.join(sess.tmp, rt.name + ".td.pid")
    try:
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
    out = os.open(os.path.join(sess.io_dir, rt.name + ".td.out"),
                  os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    off = rt.err_offset()
    watch = None
    perf = time.perf_counter_ns
    res = {"mode": mode}
    rt.live.add(cid)
    try:
        with rt.ctx():
            rt.check(rt.run(["create", "--bundle", bundle, "--pid-file", pidfile, cid], stdout=out), "create", off)
            watch = rt.watch_init(pidfile, off)
            t_fill = time.monotonic()
            rt.check(rt.run(["start", cid]), "start", off)
            want = nprocs + 1
            while True:
                n = bl.count_procs(pids_dir)
                if n == want:
                    break
                if watch.wait(0):
                    raise bl.BenchError("%s: init exited (%s) while starting %d processes; %s procs seen; log: %s"
                                        % (rt.name, watch.status, nprocs, n, rt.err_since(off)))
                if time.monotonic() - t_fill > fill_timeout:
                    raise bl.BenchError("%s: %s processes in %s after %d s, want %d"
                                        % (rt.name, n, pids_dir, fill_timeout, want))
                time.sleep(0.01)
            res["fill_s"] = time.monotonic() - t_fill
            time.sleep(settle)
            if bl.count_procs(pids_dir) != want:
                raise bl.BenchError("%s: process count changed during settle" % rt.name)

            if mode == "force":
                t0 = perf()
                rc = rt.run(["delete", "--force", cid], watch=watch)
                t1 = perf()
                rt.check(rc, "delete --force", off)
                rt.live.discard(cid)
                res["total"] = t1 - t0
                res["init_exited_before_return"] = watch.done
                if watch.done:
                    res["init_exit_after"] = watch.exited_ns - t0
            else:
                t0 = perf()
                rc = rt.run(["kill", "--all", cid, "KILL"], watch=watch)
                t1 = perf()
                rt.check(rc, "kill --all", off)
                if not watch.wait(30):
                    raise bl.BenchError("%s: init still alive 30 s after kill --all" % rt.name)
                t2 = perf()
                rc = rt.run(["delete", cid], watch=watch)
                t3 = perf()
                rt.check(rc, "delete", off)
                rt.live.discard(cid)
                res.update({"total": t3 - t0, "kill": t1 - t0, "wait": t2 - t1, "delete": t3 - t2})
                res["init_exit_after"] = watch.exited_ns - t0
    finally:
        os.close(out)
        if cid in rt.live:
            rt.force_delete(cid, watch)
        if watch is not None:
            if not watch.wait(10):
                bl.log("warning: %s init pid %d still alive after cleanup" % (rt.name, watch.pid))
            watch.close()
    # post-conditions, outside the timed region and back in the host mount namespace
    res["procs_left"] = bl.count_procs(pids_dir) or 0
    res["cgroups_left"] = bl.cgroup_dirs(cgpath, sess.mounts)
    res["state_left"] = os.path.exists(os.path.join(rt.root, cid))
    res["init_status"] = watch.status
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtimes", help="comma list of paddock,runc,crun (default: all; paddock only if built)")
    ap.add_argument("--paddock", help="paddock binary (default $PADDOCK or target/x86_64-unknown-linux-gnu/release/paddock)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per runtime and mode (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="unrecorded force-mode trials per runtime (default 1)")
    ap.add_argument("--modes", default="force,kill")
    ap.add_argument("--procs", type=int, default=1000)
    ap.add_argument("--pids", type=int, default=1100)
    ap.add_argument("--memory", type=int, default=1 << 30)
    ap.add_argument("--fill-timeout", type=int, default=120)
    ap.add_argument("--settle", type=float, default=0.2, help="seconds to wait once all processes exist")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--crun-ns", choices=("auto", "always", "never"), default="auto")
    ap.add_argument("--clean-stale", action="store_true")
    ap.add_argument("--state-on-disk", action="store_true",
                    help="keep the runtimes' state roots in the temp dir on disk instead of a tmpfs")
    ap.add_argument("--out", default=os.path.join(bl.OUT_DIR, "teardown.json"))
    a = ap.parse_args()
    modes = [m for m in a.modes.split(",") if m]
    if any(m not in MODES for m in modes) or a.pids < a.procs + 2:
        bl.log("teardown: bad --modes or --pids < --procs + 2")
        return 2

    try:
        bins = bl.resolve_runtimes(a.runtimes, a.paddock)
    except bl.BenchError as e:
        bl.log("teardown: %s" % e)
        return 2
    rng, seed = bl.new_rng(a.seed)
    result = {
        "benchmark": "teardown",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": bl.host_info(),
        "config": {"reps": a.reps, "warmup": a.warmup, "modes": modes, "procs": a.procs, "pids_limit": a.pids,
                   "memory_limit": a.memory, "seed": seed, "process": ["sh", "-c", script(a.procs)],
                   "timing": "force: delete --force; kill: kill --all KILL + wait for init exit + delete"},
        "target_ms": TARGET_MS,
        "runtimes": {},
    }
    failed_any = False
    try:
        with bl.Session(bins, crun_ns=a.crun_ns, clean_stale=a.clean_stale, tag="teardown",
                        state_tmpfs=not a.state_on_disk) as sess:
            result["notes"] = sess.notes
            data = {}
            for name, rt in sess.runtimes.items():
                bundle = os.path.join(sess.tmp, "bundle-" + name)
                cfg = bl.mkbundle(bundle, "/%s/td-%s-0" % (bl.CG_PARENT, name), a.memory, a.pids,
                                  ["sh", "-c", script(a.procs)])
                data[name] = {"rt": rt, "bundle": bundle, "config": cfg, "failures": [],
                              "trials": {m: [] for m in modes}}
                result["runtimes"][name] = {"binary": rt.binary, "version": rt.version()}
            active = list(sess.runtimes)

            def one(name, mode, label, record):
                d = data[name]
                try:
                    r = trial(sess, d["rt"], d["bundle"], d["config"], mode, label,
                              a.procs, a.fill_timeout, a.settle)
                except (bl.BenchError, OSError) as e:
                    d["failures"].append({"trial": "%s-%s" % (mode, label), "error": str(e)})
                    bl.log("teardown: %s %s %s FAILED: %s" % (name, mode, label, e))
                    return False
                if record:
                    d["trials"][mode].append(r)
                bl.log("teardown: %-7s %-5s %-3s %8.2f ms%s" % (
                    name, mode, label, r["total"] / 1e6,
                    "" if record else " (warm-up)") + leftover_text(r)
                    + ("  (returned before init exit seen)" if early_return(r) else ""))
                return True

            bl.log("teardown: runtimes %s, modes %s, %d reps, %d processes (seed %d)"
                   % (",".join(active), ",".join(modes), a.reps, a.procs, seed))
            for i in range(a.warmup):
                for name in bl.make_order(active, i, "shuffle", rng):
                    if not one(name, "force", "w%d" % i, False) and name in active:
                        bl.log("teardown: dropping %s (failed during warm-up)" % name)
                        active.remove(name)
                        failed_any = True
                sess.reap_strays()
            if not active:
                raise bl.BenchError("every runtime failed during warm-up")
            for i in range(a.reps):
                pairs = [(n, m) for n in active for m in modes]
                rng.shuffle(pairs)
                for name, mode in pairs:
                    one(name, mode, str(i), True)
                sess.reap_strays()
            result["orphans_reaped"] = sess.strays_reaped   # e.g. paddock's per-sandbox monitor processes
            for name, d in data.items():
                rr = result["runtimes"][name]
                rr["dropped_in_warmup"] = name not in active
                rr["failures"] = d["failures"]
                if d["failures"]:
                    failed_any = True
                rr["modes"] = {}
                for m in modes:
                    tr = d["trials"][m]
                    phases = ("total",) if m == "force" else ("total", "kill", "wait", "delete")
                    rr["modes"][m] = {
                        "stats_ms": {p: bl.summarize_ns([t[p] for t in tr]) for p in phases},
                        "init_exit_after_ms": bl.summarize_ns([t["init_exit_after"] for t in tr
                                                               if t.get("init_exit_after") is not None]),
                        "trials": tr,
                    }
    except KeyboardInterrupt:
        bl.log("teardown: interrupted; cleaned up")
        return 130
    except bl.BenchError as e:
        bl.log("teardown: %s" % e)
        return 1

    text = report(result)
    print(text, end="", flush=True)
    bl.write_text("teardown.txt", text)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    bl.log("teardown: results in %s" % a.out)
    return 1 if failed_any else 0


def leftover_text(r):
    bits = []
    if r["procs_left"]:
        bits.append("%d procs left" % r["procs_left"])
    if r["cgroups_left"]:
        bits.append("%d cgroup dirs left" % len(r["cgroups_left"]))
    if r["state_left"]:
        bits.append("state left")
    return ("  [" + ", ".join(bits) + "]") if bits else ""


def early_return(r):
    """delete --force returned before the init's exit was seen. Not necessarily a bug: the kernel
    empties the cgroup (cgroup_exit) before it notifies the exit (exit_notify), so a runtime that
    waits for an empty cgroup can return a moment before the pidfd fires."""
    return r["mode"] == "force" and not r.get("init_exited_before_return")


def report(res):
    c = res["config"]
    lines = ["teardown of a sandbox with %d processes (busybox sleep), pids limit %d, memory %d MiB"
             % (c["procs"], c["pids_limit"], c["memory_limit"] >> 20),
             "%d reps per runtime and mode, interleaved (seed %d); ms, median / p90 (min-max)"
             % (c["reps"], c["seed"]),
             "host: %s, %s cpus, cgroup %s, load average at start %.2f"
             % (res["host"]["kernel"], res["host"]["cpus"], res["host"]["cgroup_layout"], res["host"]["loadavg"][0]),
             ""]
    lines.append("%-8s %-6s %3s %-30s %-15s %-15s %-15s %s"
                 % ("runtime", "mode", "n", "total", "kill", "wait", "delete", "target <= %.0f" % TARGET_MS))
    for name, rr in res["runtimes"].items():
        for m, md in (rr.get("modes") or {}).items():
            st = md["stats_ms"]
            tot = st.get("total")
            if not tot:
                lines.append("%-8s %-6s %3d -" % (name, m, 0))
                continue
            cells = "%s / %s (%s-%s)" % (bl.fmt_ms(tot["median"]), bl.fmt_ms(tot["p90"]),
                                          bl.fmt_ms(tot["min"]), bl.fmt_ms(tot["max"]))
            ph = []
            for p in ("kill", "wait", "delete"):
                s = st.get(p)
                ph.append("%-15s" % ("%s / %s" % (bl.fmt_ms(s["median"]), bl.fmt_ms(s["p90"])) if s else "-"))
            verdict = ("ok" if tot["median"] <= TARGET_MS else "MISSED") if name == "paddock" else ""
            lines.append("%-8s %-6s %3d %-30s %s %s" % (name, m, tot["n"], cells, " ".join(ph), verdict))
    lines.append("")
    lines.append("force: one `delete --force`; kill: `kill --all ID KILL` + wait for init exit (pidfd) + `delete`")
    for name, rr in res["runtimes"].items():
        extra = []
        if rr.get("failures"):
            extra.append("%d failures (first: %s)" % (len(rr["failures"]), rr["failures"][0]["error"]))
        for m, md in (rr.get("modes") or {}).items():
            lefts = [leftover_text(t) for t in md["trials"] if leftover_text(t)]
            if lefts:
                extra.append("%s: %d trials with leftovers (%s)" % (m, len(lefts), lefts[0].strip()))
            early = sum(1 for t in md["trials"] if early_return(t))
            if early:
                extra.append("%s: %d trials returned before the init's exit was seen (info)" % (m, early))
        if rr.get("dropped_in_warmup"):
            extra.append("dropped during warm-up")
        if extra:
            lines.append("%s: %s" % (name, "; ".join(extra)))
    for n in res.get("notes", []):
        lines.append("note: " + n)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
