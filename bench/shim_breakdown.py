#!/usr/bin/env python3
"""Where the time of one `ctr run --rm <busybox> ID true` goes, phase by phase, through
paddock's shim and through containerd-shim-runc-v2 with runc, under one private containerd
(the one bench/shim.py starts).

The kernel's tracer (tracefs) records, in a private instance and on one clock:
  - process events (fork, exec, exit): ctr, the shim's start/delete actions, paddock/runc
    calls, the container's `true`;
  - uprobes at the entry of the functions that bound each phase: in ctr and containerd
    (Debian's binaries are stripped, but a Go binary keeps its function table, .gopclntab,
    read here) and in containerd-shim-paddock-v2 (its symbols).
Each run sits between two trace_marker lines. Phases are medians over the runs; both
runtimes interleave in shuffled order, with a pause between runs (--pause) so that one run's
leftovers (a shim exiting, containerd's GC) stay out of the next.

Not a test and not the speed figure (bench/shim.py is: probes cost a little, the pauses
change the load). Run as root: bench/shim_breakdown.py [--runs N] [--baseline DIR]
--baseline DIR: also run the shim and paddock found in DIR as runtime io.containerd.paddockbase.v2
(an older build to compare against). Results: bench/out/shim_breakdown.txt.
Leaves nothing: the tracing instance and the probes go, and shim.py's containerd cleans up.
"""

import argparse
import os
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shim as sb  # noqa: E402

TRACEFS = "/sys/kernel/tracing"
UPROBES = os.path.join(TRACEFS, "uprobe_events")
GROUP = "paddock_breakdown"
BASE_RT = "io.containerd.paddockbase.v2"
CTD = "github.com/containerd/containerd"

GO_PROBES = {
    "/usr/bin/ctr": {
        "ctr_main": "main.main",
        "ctr_task_Wait": CTD + ".(*task).Wait",
        "ctr_task_Delete": CTD + ".(*task).Delete",
        "ctr_container_Delete": CTD + ".(*container).Delete",
    },
    "/usr/bin/containerd": {
        "ctd_tasks_Create": CTD + "/services/tasks.(*local).Create",
        "ctd_binary_Start": CTD + "/runtime/v2.(*binary).Start",
        "ctd_shimTask_Create": CTD + "/runtime/v2.(*shimTask).Create",
        "ctd_shimTask_Shutdown": CTD + "/runtime/v2.(*shimTask).Shutdown",
        "ctd_binary_Delete": CTD + "/runtime/v2.(*binary).Delete",
        "ctd_Bundle_Delete": CTD + "/runtime/v2.(*Bundle).Delete",
    },
}

# (label, from, to): points are probe names, BEGIN/END, or the derived points in points()
PHASES = [
    ("ctr: process start, Go init", "BEGIN", "ctr_main"),
    ("ctr+containerd: container, snapshot", "ctr_main", "ctd_tasks_Create"),
    ("containerd: bundle", "ctd_tasks_Create", "ctd_binary_Start"),
    ("shim start action, connect", "ctd_binary_Start", "ctd_shimTask_Create"),
    ("Create (mount, runtime create)", "ctd_shimTask_Create", "ctr_task_Wait"),
    ("  runtime create, exec to exit", "RT_CREATE", "RT_CREATE_END"),
    ("Wait, Start .. container exits", "ctr_task_Wait", "TRUE_EXIT"),
    ("  runtime start, exec to exit", "RT_START", "RT_START_END"),
    ("exit -> TaskExit, Wait -> ctr", "TRUE_EXIT", "ctr_task_Delete"),
    ("Delete (runtime delete, unmount)", "ctr_task_Delete", "ctd_shimTask_Shutdown"),
    ("  runtime delete, exec to exit", "RT_DELETE", "RT_DELETE_END"),
    ("Shutdown, shim delete action", "ctd_shimTask_Shutdown", "ctd_Bundle_Delete"),
    ("  delete action, exec to exit", "ACTION_DELETE", "ACTION_DELETE_END"),
    ("containerd: bundle removal", "ctd_Bundle_Delete", "ctr_container_Delete"),
    ("ctr+containerd: container removal", "ctr_container_Delete", "END"),
]

LINE = re.compile(r"^\s*(.+?)-(\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[\d+\]\s+\S+\s+([\d.]+): (\w+): (.*)$")


def go_functions(path):
    """name -> file offset of every function of a Go (1.18+) binary, from .gopclntab."""
    with open(path, "rb") as f:
        data = f.read()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    secs = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = secs[shstrndx][4]
    named = {}
    for name, _, _, addr, off, size in secs:
        end = data.index(b"\0", strtab + name)
        named[data[strtab + name:end].decode()] = (addr, off, size)
    _, off, size = named[".gopclntab"]
    tab = data[off:off + size]
    magic, = struct.unpack_from("<I", tab, 0)
    if magic not in (0xFFFFFFF0, 0xFFFFFFF1):
        raise ValueError(f"{path}: .gopclntab of an unknown Go version ({magic:#x})")
    nfunc, _, text, nameoff, _, _, _, pclnoff = struct.unpack_from("<8Q", tab, 8)
    text_addr, text_off, _ = named[".text"]
    out = {}
    for i in range(nfunc):
        entry, funcoff = struct.unpack_from("<II", tab, pclnoff + i * 8)
        _, name = struct.unpack_from("<Ii", tab, pclnoff + funcoff)
        start = nameoff + name
        fname = tab[start:tab.index(b"\0", start)].decode(errors="replace")
        out[fname] = text + entry - text_addr + text_off
    return out


def elf_offset(path, vaddr):
    with open(path, "rb") as f:
        data = f.read()
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        typ, _, off, addr, _, filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if typ == 1 and addr <= vaddr < addr + filesz:
            return vaddr - addr + off
    raise ValueError(f"{path}: {vaddr:#x} is in no loaded segment")


def rust_probes(shim, prefix):
    """Entries of the shim's Task methods and actions (for the raw timelines)."""
    task = "<containerd_shim_paddock_v2::task::Service as containerd_shim_protos::shim::shim_ttrpc::Task>::"
    want = {prefix + "_" + m: "^" + re.escape(task + m) + "$" for m in ("create", "start", "delete", "shutdown")}
    want[prefix + "_action_delete"] = r"^containerd_shim_paddock_v2::service::delete$"
    out = subprocess.run(["nm", "-C", "--defined-only", shim], capture_output=True, text=True).stdout
    syms = {}
    for line in out.splitlines():
        p = line.split(" ", 2)
        if len(p) == 3 and p[1] in "tT":
            syms.setdefault(re.sub(r"::h[0-9a-f]{16}$", "", p[2]), []).append(int(p[0], 16))
    probes = {}
    for name, pat in want.items():
        hits = [a for s, addrs in syms.items() if re.search(pat, s) for a in addrs]
        if len(hits) == 1:
            probes[name] = (shim, elf_offset(shim, hits[0]))
    return probes


class Tracer:
    def __init__(self, probes):
        self.dir = os.path.join(TRACEFS, "instances", f"paddock-breakdown-{os.getpid()}")
        self.probes = []
        try:
            for name, (path, off) in probes.items():
                self._uprobe(f"p:{GROUP}/{name} {path}:{off:#x}\n")
                self.probes.append(name)
            os.mkdir(self.dir)
            self._w("buffer_size_kb", "32768")
            self._w("trace_clock", "mono")
            events = ["sched/sched_process_fork", "sched/sched_process_exec", "sched/sched_process_exit"]
            for e in events + [f"{GROUP}/{p}" for p in self.probes]:
                self._w(f"events/{e}/enable", "1")
            self.marker = open(os.path.join(self.dir, "trace_marker"), "w")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _uprobe(line):
        # not open(.., "a"): Python seeks to the end, which this file refuses
        fd = os.open(UPROBES, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def _w(self, name, value):
        with open(os.path.join(self.dir, name), "w") as f:
            f.write(value)

    def mark(self, text):
        self.marker.write(text + "\n")
        self.marker.flush()

    def text(self):
        self._w("tracing_on", "0")
        with open(os.path.join(self.dir, "trace")) as f:
            return f.read()

    def close(self):
        if os.path.isdir(self.dir):
            if getattr(self, "marker", None):
                self.marker.close()
            for _ in range(10):
                try:
                    os.rmdir(self.dir)
                    break
                except OSError:
                    time.sleep(0.2)
        for name in self.probes:
            try:
                self._uprobe(f"-:{GROUP}/{name}\n")
            except OSError as e:
                print(f"shim_breakdown: cannot remove probe {name}: {e}", file=sys.stderr)


def runs_of(trace, ours):
    """[(runtime, total ms, [(ms since BEGIN, comm, pid, event, details)])] of pids in `ours`
    (containerd's threads and this process) and their descendants."""
    ours = set(ours)
    runs, cur = [], None
    for line in trace.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        comm, pid, ts, ev, rest = m.group(1), int(m.group(2)), float(m.group(3)), m.group(4), m.group(5)
        if ev == "sched_process_fork":
            f = dict(re.findall(r"(\w+)=(\S+)", rest))
            if int(f["pid"]) in ours:
                ours.add(int(f["child_pid"]))
            continue
        if ev == "tracing_mark_write":
            words = rest.split()
            if words[0] == "BEGIN":
                cur = (words[1], ts, [])
            elif words[0] == "END" and cur:
                runs.append((cur[0], float(words[-1]), cur[2]))
                cur = None
            continue
        if cur and pid in ours:
            cur[2].append(((ts - cur[1]) * 1e3, comm, pid, ev, rest))
    return runs


def points(total, events):
    p = {"BEGIN": 0.0, "END": total}
    for t, comm, pid, ev, rest in events:
        if ev.startswith(("ctr_", "ctd_")) and ev not in p:
            p[ev] = t

    def exit_of(pid, after):
        return next((t for t, _, q, ev, _ in events if ev == "sched_process_exit" and q == pid and t >= after), None)

    execs = [(t, pid, rest.split()[0].split("=", 1)[1]) for t, _, pid, ev, rest in events if ev == "sched_process_exec"]
    rt = [(t, pid) for t, pid, f in execs if f.endswith(("/paddock", "/runc"))]
    if rt:
        p["RT_CREATE"], p["RT_CREATE_END"] = rt[0][0], exit_of(rt[0][1], rt[0][0])
    starts = [(t, pid) for t, pid in rt if t > p.get("ctr_task_Wait", float("inf"))]
    if starts:
        p["RT_START"], p["RT_START_END"] = starts[0][0], exit_of(starts[0][1], starts[0][0])
    dels = [(t, pid) for t, pid in rt if t > p.get("ctr_task_Delete", float("inf"))]
    if dels:
        p["RT_DELETE"], p["RT_DELETE_END"] = dels[0][0], exit_of(dels[0][1], dels[0][0])
    shims = [(t, pid) for t, pid, f in execs if "containerd-shim" in f and t > p.get("ctd_binary_Delete", float("inf"))]
    if shims:
        p["ACTION_DELETE"], p["ACTION_DELETE_END"] = shims[0][0], exit_of(shims[0][1], shims[0][0])
    true_exit = [t for t, comm, _, ev, _ in events if ev == "sched_process_exit" and comm == "true"]
    if true_exit:
        p["TRUE_EXIT"] = true_exit[0]
    return p


def table(runs):
    by = {}
    for rt, total, events in runs:
        by.setdefault(rt, []).append(points(total, events))
    rts = sorted(by, key=lambda r: (r == sb.RUNC_RT, r))
    names = [r.split(".")[2] for r in rts]
    lines = [f"{'median ms over ' + str(min(len(v) for v in by.values())) + ' runs':36}" + "".join(f"{n:>13}" for n in names)]
    for label, a, b in PHASES + [("total", "BEGIN", "END")]:
        row = f"{label:36}"
        for rt in rts:
            xs = [p[b] - p[a] for p in by[rt] if p.get(a) is not None and p.get(b) is not None]
            row += f"{statistics.median(xs):>13.1f}" if xs else f"{'-':>13}"
        lines.append(row)
    # the three shares of each run, then their medians
    fixed = [("BEGIN", "ctd_binary_Start"), ("ctd_Bundle_Delete", "END")]
    runtime = [("RT_CREATE", "RT_CREATE_END"), ("RT_START", "RT_START_END"), ("RT_DELETE", "RT_DELETE_END")]

    def share(p, spans):
        if any(p.get(a) is None or p.get(b) is None for a, b in spans):
            return None
        return sum(p[b] - p[a] for a, b in spans)

    lines.append("")
    for label, f in (
        ("share: ctr + containerd alone", lambda p: share(p, fixed)),
        ("share: runtime binary (3 calls)", lambda p: share(p, runtime)),
        ("share: shim + containerd for it", lambda p: None if share(p, fixed) is None or share(p, runtime) is None
         else p["END"] - share(p, fixed) - share(p, runtime)),
    ):
        row = f"{label:36}"
        for rt in rts:
            xs = [x for x in map(f, by[rt]) if x is not None]
            row += f"{statistics.median(xs):>13.1f}" if xs else f"{'-':>13}"
        lines.append(row)
    if sb.RUNC_RT in by:
        runc = statistics.median(p["END"] for p in by[sb.RUNC_RT])
        lines.append(f"{'ratio to runc':36}" + "".join(f"{statistics.median(p['END'] for p in by[rt]) / runc:>13.2f}" for rt in rts))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--pause", type=float, default=0.3, help="seconds between runs")
    ap.add_argument("--bin-dir", default=sb.benchlib.RELEASE_DIR)
    ap.add_argument("--baseline", default="", help="directory with an older shim and paddock")
    ap.add_argument("--raw", default="", help="also write the trace here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("shim_breakdown.py: run as root")
    if not os.path.exists(UPROBES):
        sys.exit(f"shim_breakdown.py: {UPROBES} missing (tracefs with uprobe events is needed)")
    bin_dir = os.path.abspath(a.bin_dir)
    shim = os.path.join(bin_dir, "containerd-shim-paddock-v2")
    probes = {}
    for path, fns in GO_PROBES.items():
        offs = go_functions(path)
        probes.update({name: (path, offs[fn]) for name, fn in fns.items()})
    probes.update(rust_probes(shim, "pd"))
    rts = [sb.PADDOCK_RT, sb.RUNC_RT]
    tmp = tempfile.mkdtemp(prefix="paddock-breakdown-")
    path = bin_dir
    if a.baseline:
        # the older build under its own runtime name, its paddock beside it
        base = os.path.join(tmp, "baseline")
        os.mkdir(base)
        shutil.copy(os.path.join(a.baseline, "containerd-shim-paddock-v2"), os.path.join(base, "containerd-shim-paddockbase-v2"))
        shutil.copy(os.path.join(a.baseline, "paddock"), os.path.join(base, "paddock"))
        path += ":" + base
        probes.update(rust_probes(os.path.join(base, "containerd-shim-paddockbase-v2"), "pb"))
        rts.append(BASE_RT)
    ctd = tracer = None
    try:
        tar = os.path.join(tmp, "busybox.tar")
        subprocess.run(["bash", sb.IMAGE_SCRIPT, tar, sb.REF], check=True, stdout=subprocess.DEVNULL)
        ctd = sb.Containerd(path)
        ctd.ctr(["images", "import", tar])
        for rt in rts:
            sb.run_rm(ctd, rt, sb.REF, "warm")
        ours = [os.getpid()] + [int(t) for t in os.listdir(f"/proc/{ctd.proc.pid}/task")]
        tracer = Tracer(probes)
        for i in range(a.runs):
            order = rts[:]
            random.shuffle(order)
            for rt in order:
                time.sleep(a.pause)
                tracer.mark(f"BEGIN {rt} {i}")
                ns = sb.run_rm(ctd, rt, sb.REF, i)
                tracer.mark(f"END {rt} {i} {ns / 1e6:.3f}")
        trace = tracer.text()
    finally:
        if tracer:
            tracer.close()
        if ctd:
            ctd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if a.raw:
        with open(a.raw, "w") as f:
            f.write(trace)
    txt = table(runs_of(trace, ours))
    os.makedirs(sb.OUT_DIR, exist_ok=True)
    with open(os.path.join(sb.OUT_DIR, "shim_breakdown.txt"), "w") as f:
        f.write(txt + "\n")
    print(txt)


if __name__ == "__main__":
    main()
