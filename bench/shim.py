#!/usr/bin/env python3
"""containerd shims side by side: paddock's `containerd-shim-paddock-v2` (runtime
io.containerd.paddock.v2, which execs paddock) against Debian's containerd-shim-runc-v2 with
runc (io.containerd.runc.v2), under one private containerd started here.

Measures, in one run:
  1. `ctr run --rm <busybox> ID true`, whole client call, interleaved in shuffled order;
     median, p90 and the paddock/runc ratio of the medians (target <= 0.6);
  2. resident memory of one idle shim holding one running container (`sleep`): VmRSS, and
     Pss from smaps_rollup (RSS counts the shim's binary pages it shares with other shims;
     Pss splits them);
  3. 100 running containers: (a) one shim per container (ctr's default), the sum over all
     shims; (b) all in one shim (paddock: the pod grouping annotation
     io.kubernetes.cri.sandbox-id; the runc shim groups on the same annotation).

Not a test: nothing is asserted. Run as root: bench/shim.py [--iterations N] [--containers N]
Results: bench/out/shim.{json,txt}. Cleans up: tasks, containers, containerd, its directory,
the cgroups /<namespace> it created.
"""

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
OUT_DIR = os.path.join(BENCH_DIR, "out")
IMAGE_SCRIPT = os.path.join(REPO, "tests", "fixtures", "busybox-image.sh")
REF = "localhost/paddock/busybox:latest"
NS = "bench"
PADDOCK_RT = "io.containerd.paddock.v2"
RUNC_RT = "io.containerd.runc.v2"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


PADDOCK_SHIM_STATE = "/run/paddock/containerd"


def mount_tmpfs(path):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711", "paddock-bench", path], check=True)


class Containerd:
    """A private containerd. With `state_on_tmpfs` its state, the runtimes' state roots and
    the paddock shim's state directory are on a tmpfs, as /run is on a standard node (on this
    machine /run is a disk filesystem); its root (metadata, content, snapshots) stays on disk
    under /var/tmp, as /var/lib/containerd would be."""

    def __init__(self, bin_dir, state_on_tmpfs=True):
        self.dir = tempfile.mkdtemp(prefix="paddock-bench-ctd-", dir="/run")
        self.disk = tempfile.mkdtemp(prefix="paddock-bench-ctd-root-", dir="/var/tmp")
        self.mounted = []
        self.notes = []
        if state_on_tmpfs:
            mount_tmpfs(self.dir)
            self.mounted.append(self.dir)
            os.makedirs(PADDOCK_SHIM_STATE, exist_ok=True)
            if os.path.ismount(PADDOCK_SHIM_STATE) or os.listdir(PADDOCK_SHIM_STATE):
                self.notes.append(f"{PADDOCK_SHIM_STATE} is in use, so paddock's shim state stays where it is")
            else:
                mount_tmpfs(PADDOCK_SHIM_STATE)
                self.mounted.append(PADDOCK_SHIM_STATE)
            self.notes.append("containerd's state, the runtimes' state roots and paddock's shim state on a "
                              "tmpfs, as /run is on a standard node; containerd's root on disk (/var/tmp)")
        else:
            self.notes.append("containerd's state and root and the runtimes' state roots on disk")
        self.sock = os.path.join(self.dir, "containerd.sock")
        for sub in ("state", "tmp", "opt", "runc-root", "fifo"):
            os.makedirs(os.path.join(self.dir, sub))
        os.makedirs(os.path.join(self.disk, "root"))
        cfg = os.path.join(self.dir, "config.toml")
        d = self.dir
        with open(cfg, "w") as f:
            f.write(f"""version = 2
root = "{self.disk}/root"
state = "{d}/state"
temp = "{d}/tmp"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = "{d}/debug.sock"
  level = "warn"
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
""")
        env = dict(os.environ)
        env["PATH"] = bin_dir + ":" + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        if state_on_tmpfs:
            self.node_state_on_tmpfs(env)
        self.log = open(os.path.join(self.dir, "containerd.log"), "w")
        self.proc = subprocess.Popen(["/usr/bin/containerd", "--config", cfg], env=env,
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, cwd=self.dir)
        deadline = time.time() + 20
        while time.time() < deadline:
            if os.path.exists(self.sock) and self.ctr(["version"], check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("containerd did not start; see " + self.log.name)

    def node_state_on_tmpfs(self, env):
        """paddock's node-wide state under /run (its CPU registry, its identity leases) on the
        same tmpfs, through a node config of the bench's own that containerd's environment
        passes to the shim and on to `paddock`, unless the node or the caller has a config
        already (then it is used as it is)."""
        if benchlib.paddock_node_config_exists(env):
            self.notes.append("paddock's node config is the node's own: its /run state stays where it says")
            return
        config = benchlib.node_config(self.dir)
        env["PADDOCK_CONFIG"] = config
        self.notes.append("paddock's node state (CPU registry, identity leases) on that tmpfs too, "
                          "through PADDOCK_CONFIG=%s" % config)

    def ctr(self, args, check=True):
        p = subprocess.run(["/usr/bin/ctr", "--address", self.sock, "--namespace", NS] + args,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=120)
        if check and p.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {p.returncode}: {p.stderr.strip()}")
        return p

    def run_flags(self, runtime):
        flags = ["--fifo-dir", os.path.join(self.dir, "fifo"), "--runtime", runtime]
        if runtime == RUNC_RT:
            flags += ["--runc-root", os.path.join(self.dir, "runc-root")]
        return flags

    def shims(self):
        """pid -> cmdline of the shims of this containerd."""
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and b"containerd-shim" in argv[0] and self.sock.encode() in argv:
                out[int(pid)] = argv[0].decode(errors="replace")
        return out

    def clean(self):
        for _ in range(2):
            tasks = self.ctr(["tasks", "ls", "-q"], check=False).stdout.split()
            for t in tasks:
                self.ctr(["tasks", "rm", "-f", t], check=False)
            for c in self.ctr(["containers", "ls", "-q"], check=False).stdout.split():
                self.ctr(["containers", "rm", c], check=False)

    def stop(self):
        try:
            self.clean()
        finally:
            deadline = time.time() + 5
            while self.shims() and time.time() < deadline:
                time.sleep(0.05)
            for pid in self.shims():
                os.kill(pid, signal.SIGKILL)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for path in (self.dir, self.disk):
                subprocess.run(["umount", "-R", "-l", path], stderr=subprocess.DEVNULL)
                shutil.rmtree(path, ignore_errors=True)
            for path in self.mounted:
                if os.path.ismount(path):
                    subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)
            for mnt in cgroup_mounts():
                p = os.path.join(mnt, NS)
                if os.path.isdir(p):
                    for root, dirs, _ in sorted(os.walk(p, topdown=False)):
                        try:
                            os.rmdir(root)
                        except OSError:
                            pass


def cgroup_mounts():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            fstype = parts[parts.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                out.append(parts[4])
    return out


def memory(pid):
    rss = pss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def monitors(shim_pids):
    """paddock's per-sandbox monitors (comm paddock-monitor), children of these shims."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                st = dict(l.split(":", 1) for l in f if ":" in l)
        except OSError:
            continue
        if st.get("Name", "").strip() == "paddock-monitor" and int(st.get("PPid", "0")) in shim_pids:
            out.append(int(pid))
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def run_rm(ctd, runtime, image, i):
    cid = f"rm-{runtime.split('.')[2]}-{i}"
    t = time.perf_counter_ns()
    p = ctd.ctr(["run"] + ctd.run_flags(runtime) + ["--rm", image, cid, "true"], check=False)
    dt = time.perf_counter_ns() - t
    if p.returncode != 0:
        raise RuntimeError(f"{runtime}: ctr run --rm true: {p.returncode}: {p.stderr.strip()}")
    return dt


def idle_memory(ctd, runtime, image):
    cid = "idle-" + runtime.split(".")[2]
    ctd.ctr(["run"] + ctd.run_flags(runtime) + ["-d", image, cid, "sleep", "1000"])
    time.sleep(1.0)
    shims = ctd.shims()
    pid = next(p for p, cmd in shims.items() if ("paddock" in cmd) == (runtime == PADDOCK_RT))
    rss, pss = memory(pid)
    threads = len(os.listdir(f"/proc/{pid}/task"))
    mon = [memory(m) for m in monitors([pid])]
    ctd.ctr(["tasks", "rm", "-f", cid])
    ctd.ctr(["containers", "rm", cid])
    return {"rss_kb": rss, "pss_kb": pss, "threads": threads,
            "monitor_rss_kb": sum(m[0] for m in mon), "monitor_pss_kb": sum(m[1] for m in mon)}


def many(ctd, runtime, image, n, grouped):
    tag = runtime.split(".")[2]
    ids = [f"m-{tag}-{'g' if grouped else 's'}-{i}" for i in range(n)]
    extra = ["--annotation", "io.kubernetes.cri.sandbox-id=bench-pod"] if grouped else []
    for cid in ids:
        ctd.ctr(["run"] + ctd.run_flags(runtime) + ["-d"] + extra + [image, cid, "sleep", "1000"])
    time.sleep(1.0)
    pids = [p for p, cmd in ctd.shims().items() if ("paddock" in cmd) == (runtime == PADDOCK_RT)]
    rss = pss = 0
    for p in pids:
        r, s = memory(p)
        rss += r
        pss += s
    mon = [memory(m) for m in monitors(pids)]
    for cid in ids:
        ctd.ctr(["tasks", "rm", "-f", cid], check=False)
        ctd.ctr(["containers", "rm", cid], check=False)
    return {"shims": len(pids), "rss_kb_total": rss, "pss_kb_total": pss,
            "monitors": len(mon), "monitor_pss_kb_total": sum(m[1] for m in mon)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--bin-dir", default=benchlib.RELEASE_DIR,
                    help="directory with containerd-shim-paddock-v2 and paddock")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--state-on-disk", action="store_true",
                    help="keep containerd's state and the runtimes' state roots on this machine's /run "
                         "(a disk filesystem here) instead of a tmpfs")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("shim.py: run as root")
    for b in ("containerd-shim-paddock-v2", "paddock"):
        if not os.access(os.path.join(a.bin_dir, b), os.X_OK):
            sys.exit(f"shim.py: {a.bin_dir}/{b} missing (cargo build --release)")
    if not shutil.which("containerd-shim-runc-v2") or not shutil.which("runc"):
        sys.exit("shim.py: containerd-shim-runc-v2 and runc are needed (apt-get install containerd runc)")
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="paddock-bench-img-")
    ctd = None
    res = {"seed": seed, "iterations": a.iterations, "containers": a.containers}
    try:
        tar = os.path.join(tmp, "busybox.tar")
        subprocess.run(["bash", IMAGE_SCRIPT, tar, REF], check=True, stdout=subprocess.DEVNULL)
        ctd = Containerd(os.path.abspath(a.bin_dir), state_on_tmpfs=not a.state_on_disk)
        ctd.ctr(["images", "import", tar])
        rts = [PADDOCK_RT, RUNC_RT]
        samples = {rt: [] for rt in rts}
        for i in range(a.warmup + a.iterations):
            order = rts[:]
            rng.shuffle(order)
            for rt in order:
                dt = run_rm(ctd, rt, REF, i)
                if i >= a.warmup:
                    samples[rt].append(dt)
        res["run_rm_ns"] = samples
        med = {rt: statistics.median(samples[rt]) for rt in rts}
        res["idle"] = {rt: idle_memory(ctd, rt, REF) for rt in rts}
        res["many_separate"] = {rt: many(ctd, rt, REF, a.containers, False) for rt in rts}
        res["many_grouped"] = {rt: many(ctd, rt, REF, a.containers, True) for rt in rts}
    finally:
        if ctd:
            ctd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    res["notes"] = ctd.notes if ctd else []
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "shim.json"), "w") as f:
        json.dump(res, f, indent=1)
    ms = lambda ns: ns / 1e6
    lines = [f"containerd shims (seed {seed}, {a.iterations} iterations, {a.containers} containers)",
             f"{'':28}{'paddock shim':>16}{'runc shim':>16}{'ratio':>8}"]
    p, r = med[PADDOCK_RT], med[RUNC_RT]
    lines.append(f"{'ctr run --rm true, median':28}{ms(p):>13.1f} ms{ms(r):>13.1f} ms{p / r:>8.2f}")
    p90 = {rt: pct(samples[rt], 0.9) for rt in rts}
    lines.append(f"{'  p90':28}{ms(p90[PADDOCK_RT]):>13.1f} ms{ms(p90[RUNC_RT]):>13.1f} ms")
    for key, label in (("rss_kb", "idle shim, 1 container RSS"), ("pss_kb", "  PSS")):
        pv, rv = res["idle"][PADDOCK_RT][key], res["idle"][RUNC_RT][key]
        lines.append(f"{label:28}{pv / 1024:>13.2f} MB{rv / 1024:>13.2f} MB{pv / rv:>8.2f}")
    lines.append(f"{'  threads':28}{res['idle'][PADDOCK_RT]['threads']:>16}{res['idle'][RUNC_RT]['threads']:>16}")
    lines.append(f"{'  + paddock monitor PSS':28}{res['idle'][PADDOCK_RT]['monitor_pss_kb'] / 1024:>13.2f} MB{'-':>16}")
    for key, label in (("many_separate", f"{a.containers} containers, 1 shim each"),
                       ("many_grouped", f"{a.containers} containers, 1 shim")):
        pv, rv = res[key][PADDOCK_RT], res[key][RUNC_RT]
        lines.append(f"{label:28}{'':>16}{'':>16}")
        lines.append(f"{'  shims':28}{pv['shims']:>16}{rv['shims']:>16}")
        for k, l in (("rss_kb_total", "  RSS total"), ("pss_kb_total", "  PSS total")):
            lines.append(f"{l:28}{pv[k] / 1024:>13.2f} MB{rv[k] / 1024:>13.2f} MB{pv[k] / max(rv[k], 1):>8.2f}")
        lines.append(f"{'  + paddock monitors PSS':28}{pv['monitor_pss_kb_total'] / 1024:>13.2f} MB{'-':>16}  ({pv['monitors']} monitors)")
    lines += ["note: " + n for n in res["notes"]]
    txt = "\n".join(lines)
    with open(os.path.join(OUT_DIR, "shim.txt"), "w") as f:
        f.write(txt + "\n")
    print(txt)


if __name__ == "__main__":
    main()
