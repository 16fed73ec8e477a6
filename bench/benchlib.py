"""Shared plumbing for paddock's whole-process benchmarks (python3 stdlib only).

Used by lifecycle.py and teardown.py; shim.py takes its node config and release directory,
cpu.py, quota.py and oom.py its default paddock. Everything here runs as root on the node
under test and cleans up after itself:

* an exclusive lock (/run/paddock-bench.lock) so two bench runs never share
  /paddock-bench;
* a temp dir holding bundles, runtime state roots (--root), pid files and the
  containers' stdio files; the state roots sit on a tmpfs of their own (as
  /run/runc, /run/crun and /run/paddock do on a standard node, where /run is a
  tmpfs), unless state_tmpfs=False;
* a private mount namespace for crun (cgroup v1 hybrid only, see CrunNamespace);
* every container it created is deleted (--force on failure paths), every
  cgroup under /paddock-bench in every cgroup mount is removed, the namespace
  holder is killed by pid, the temp dir removed.

Waiting for a container's init: the bench makes itself a child subreaper
(PR_SET_CHILD_SUBREAPER), so when the runtime's create process exits the
container init is re-parented to the bench, exactly as it is to a
containerd shim. The exit is observed with a pidfd (pidfd_open + poll; the
pidfd becomes readable in exit_notify(), the same kernel step that wakes a
parent's waitpid) and the zombie is then reaped with waitid(P_PIDFD), which
also yields the exit status. Why both:
  - pidfd: a poll timeout (a hung container cannot hang the bench) and no
    pid-reuse race (the pid is pinned while the init is still blocked
    before `start`);
  - subreaper: the init is reaped the moment it exits. Without it the orphan
    goes to PID 1, which on this machine kind (process_api) reaps orphans only
    every few seconds, so `delete` would see zombies, pids.current would stay
    charged, and the figures would depend on PID 1's timing. With it, the
    zombie is gone before `delete` runs, as under containerd. It also lets us
    check that `sh -c 'echo hi'` really exited 0.
"""

import ctypes
import fcntl
import json
import os
import platform
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
MKBUNDLE = os.path.join(REPO, "scripts", "mkbundle.sh")
OUT_DIR = os.path.join(BENCH_DIR, "out")
# where `cargo build --release` puts the binaries (the target is named in .cargo/config.toml)
RELEASE_DIR = os.path.join(REPO, "target", "x86_64-unknown-linux-gnu", "release")
DEFAULT_PADDOCK = os.path.join(RELEASE_DIR, "paddock")
CG_PARENT = "paddock-bench"          # every cgroup the bench makes lives under /paddock-bench


def paddock_node_config_exists(env):
    """Whether the node (or the caller, through `env`) has a paddock node config of its own."""
    return bool(env.get("PADDOCK_CONFIG")) or os.path.exists("/etc/paddock/config.toml")


def node_config(state):
    """A paddock node config keeping the node's state (CPU registry, identity leases) under
    `state`/paddock-node; returns its path."""
    node = os.path.join(state, "paddock-node")
    os.makedirs(node)
    config = os.path.join(node, "config.toml")
    with open(config, "w") as f:
        f.write('[identity]\nlease_dir = "%s/leases"\n\n[cpu]\nstate_dir = "%s/cpu"\n' % (node, node))
    return config


LOCK_PATH = "/run/paddock-bench.lock"
UNIFIED = "/sys/fs/cgroup/unified"

CLONE_NEWNS = 0x00020000
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)


class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- kernel helpers

def set_child_subreaper():
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "prctl(PR_SET_CHILD_SUBREAPER): " + os.strerror(e))


def setns(fd, nstype):
    # setns(CLONE_NEWNS) needs a single-threaded caller: the bench never starts threads.
    if _libc.setns(fd, nstype) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: " + os.strerror(e))


def mountinfo(path="/proc/self/mountinfo"):
    """[(mount_point, fstype)] from a mountinfo file."""
    res = []
    with open(path) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            mp = fields[4].replace("\\040", " ")
            res.append((mp, right.split()[0]))
    return res


def cgroup_mounts(path="/proc/self/mountinfo"):
    return [mp for mp, t in mountinfo(path) if t in ("cgroup", "cgroup2")]


def unified_is_mounted(path="/proc/self/mountinfo"):
    return any(mp == UNIFIED and t == "cgroup2" for mp, t in mountinfo(path))


def is_hybrid():
    """cgroup v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified."""
    m = mountinfo()
    return any(t == "cgroup" for _, t in m) and any(mp == UNIFIED and t == "cgroup2" for mp, t in m)


def cgroup_dirs(cgroups_path, mounts):
    """Existing directories of cgroupsPath in every cgroup mount."""
    rel = cgroups_path.lstrip("/")
    return [os.path.join(m, rel) for m in mounts if os.path.isdir(os.path.join(m, rel))]


def count_procs(cgdir):
    try:
        with open(os.path.join(cgdir, "cgroup.procs")) as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return None


def wait_pidfd(pidfd, timeout_s):
    """True when the process behind pidfd has exited (pidfd readable)."""
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return bool(p.poll(None if timeout_s is None else int(timeout_s * 1000)))


def reap_pidfd(pidfd):
    """Reap a child (adopted as subreaper) by pidfd; its wait status as text, or None if not ours."""
    try:
        si = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None
    if si is None:
        return None
    if si.si_code == os.CLD_EXITED:
        return "exit %d" % si.si_status
    return "signal %d" % si.si_status


# --------------------------------------------------------------------------- statistics

def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize_ns(samples_ns):
    ms = [s / 1e6 for s in samples_ns]
    if not ms:
        return None
    return {
        "n": len(ms),
        "median": statistics.median(ms),
        "p90": percentile(ms, 90),
        "mean": statistics.fmean(ms),
        "min": min(ms),
        "max": max(ms),
        "stdev": statistics.stdev(ms) if len(ms) > 1 else 0.0,
    }


def fmt_ms(v):
    return "-" if v is None or v != v else ("%.2f" % v)


def write_json(name, data):
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def write_text(name, text):
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def host_info():
    def first_line(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
        except Exception:
            return None
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "os": first_line(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""]),
        "cgroup_layout": "hybrid" if is_hybrid() else
                         ("v2" if any(t == "cgroup2" and mp == "/sys/fs/cgroup" for mp, t in mountinfo()) else "v1"),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- crun's mount namespace

class CrunNamespace:
    """A private mount namespace without the cgroup2 mount at /sys/fs/cgroup/unified.

    crun 1.8.1 refuses the v1 hybrid layout ("cgroups in hybrid mode not supported,
    drop all controllers from cgroupv2"). A holder process
        unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified && exec sleep infinity'
    creates the namespace once; the bench keeps an fd on /proc/<holder>/ns/mnt and one
    on its own /proc/self/ns/mnt and switches with setns(2) around crun's commands, so
    crun's timings carry no nsenter/unshare fork. All cgroup v1 hierarchies and /tmp are
    the same superblocks in both namespaces, so bundles, state dirs and cgroups are
    shared. The holder runs in its own session (Ctrl-C does not kill it before cleanup
    is done with it) and is killed by pid at the end.
    """

    def __init__(self, tmpdir):
        self.holder = None
        self.host_fd = None
        self.ns_fd = None
        self.inside = False
        self.tmpdir = tmpdir

    def start(self):
        self.host_fd = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        errpath = os.path.join(self.tmpdir, "nsholder.err")
        with open(errpath, "w") as err:
            self.holder = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c",
                 "umount %s && exec sleep infinity" % UNIFIED],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True, close_fds=True)
        pid = self.holder.pid
        deadline = time.monotonic() + 10
        while True:
            if self.holder.poll() is not None:
                with open(errpath) as f:
                    raise BenchError("crun namespace holder exited (%s): %s"
                                     % (self.holder.returncode, f.read().strip()))
            try:
                with open("/proc/%d/comm" % pid) as f:
                    comm = f.read().strip()
                if comm == "sleep" and not unified_is_mounted("/proc/%d/mountinfo" % pid):
                    break
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise BenchError("crun namespace holder pid %d not ready after 10 s" % pid)
            time.sleep(0.01)
        self.ns_fd = os.open("/proc/%d/ns/mnt" % pid, os.O_RDONLY | os.O_CLOEXEC)
        if os.fstat(self.ns_fd).st_ino == os.fstat(self.host_fd).st_ino:
            raise BenchError("holder pid %d is not in a new mount namespace" % pid)
        self.verify()

    def enter(self):
        if not self.inside:
            setns(self.ns_fd, CLONE_NEWNS)
            self.inside = True

    def leave(self, force=False):
        if (self.inside or force) and self.host_fd is not None:
            setns(self.host_fd, CLONE_NEWNS)
            self.inside = False

    def verify(self):
        """Inside: no cgroup2 at /sys/fs/cgroup/unified. Back outside: the hybrid layout again."""
        self.enter()
        try:
            inside_unified = unified_is_mounted()
            inside_v1 = any(t == "cgroup" for _, t in mountinfo())
        finally:
            self.leave()
        if inside_unified or not inside_v1:
            raise BenchError("crun namespace check failed: unified mounted=%s, v1 present=%s"
                             % (inside_unified, inside_v1))
        if not is_hybrid():
            raise BenchError("after setns back, this process no longer sees the hybrid layout")

    def close(self):
        try:
            self.leave(force=True)
        except OSError as e:
            log("warning: could not setns back to the host mount namespace: %s" % e)
        if self.holder is not None and self.holder.poll() is None:
            try:
                os.kill(self.holder.pid, signal.SIGKILL)     # by pid, never by name
            except ProcessLookupError:
                pass
            try:
                self.holder.wait(10)
            except subprocess.TimeoutExpired:
                log("warning: namespace holder pid %d did not exit" % self.holder.pid)
        for fd in (self.ns_fd, self.host_fd):
            if fd is not None:
                os.close(fd)
        self.ns_fd = self.host_fd = None


class _NsCtx:
    def __init__(self, ns):
        self.ns = ns

    def __enter__(self):
        if self.ns:
            self.ns.enter()

    def __exit__(self, *a):
        if self.ns:
            self.ns.leave()


# --------------------------------------------------------------------------- runtimes

class Runtime:
    def __init__(self, name, binary, root, ns=None):
        self.name = name
        self.binary = binary
        self.root = root
        self.ns = ns                  # CrunNamespace or None
        self.live = set()             # ids created and not yet deleted
        self.errlog = None            # opened by Session

    def ctx(self):
        return _NsCtx(self.ns)

    def argv(self, *args):
        return [self.binary, "--root", self.root] + list(args)

    def run(self, args, stdin=None, stdout=None, timeout=60, watch=None):
        """Run one runtime command; stderr (and stdout unless given) go to the error log.

        Never /dev/null, never the bench's own stdio, never a pipe we would have to drain.
        Returns the exit status."""
        return spawn_wait(self.argv(*args),
                          stdin if stdin is not None else self.stdin_fd,
                          stdout if stdout is not None else self.errlog,
                          self.errlog, timeout, self.name, watch)

    def err_offset(self):
        return os.fstat(self.errlog).st_size

    def err_since(self, off):
        with open(self.errlog_path, "rb") as f:
            f.seek(off)
            return f.read().decode(errors="replace").strip()

    def check(self, rc, what, off):
        if rc != 0:
            raise BenchError("%s %s exited %d: %s" % (self.name, what, rc, self.err_since(off) or "(no output)"))

    def version(self):
        try:
            with self.ctx():
                r = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=10)
            return " ".join(r.stdout.split("\n")[0:1]).strip() or r.stderr.strip()
        except Exception as e:
            return "unknown (%s)" % e

    def read_pid(self, pidfile, off):
        try:
            with open(pidfile) as f:
                return int(f.read().strip())
        except (OSError, ValueError) as e:
            raise BenchError("%s create exited 0 but the pid file is unusable (%s); log: %s"
                             % (self.name, e, self.err_since(off) or "(no output)"))

    def watch_init(self, pidfile, off):
        pid = self.read_pid(pidfile, off)
        try:
            return InitWatch(pid)
        except OSError as e:
            raise BenchError("%s: pidfd_open(%d) from the pid file: %s" % (self.name, pid, e))

    def force_delete(self, cid, watch=None):
        """Best-effort delete --force (cleanup paths). True if the state is gone afterwards."""
        with self.ctx():
            try:
                self.run(["delete", "--force", cid], timeout=60, watch=watch)
            except BenchError as e:
                log("warning: %s" % e)
        gone = not os.path.exists(os.path.join(self.root, cid))
        if gone:
            self.live.discard(cid)
        return gone


def resolve_runtimes(spec, paddock):
    """Runtime names from --runtimes; default all three, paddock only if its binary exists."""
    paddock = paddock or os.environ.get("PADDOCK") or DEFAULT_PADDOCK
    if spec:
        names = [n.strip() for n in spec.split(",") if n.strip()]
    else:
        names = ["paddock", "runc", "crun"]
        if not (os.path.isfile(paddock) and os.access(paddock, os.X_OK)):
            log("note: no paddock binary at %s (set PADDOCK= or --paddock); benchmarking runc and crun only"
                % paddock)
            names = ["runc", "crun"]
    bins = {}
    for n in names:
        if n == "paddock":
            b = paddock
        elif n in ("runc", "crun"):
            b = shutil.which(n)
        else:
            raise BenchError("unknown runtime %r (paddock, runc, crun)" % n)
        if not b or not os.access(b, os.X_OK):
            raise BenchError("%s: binary not found (%s)" % (n, b))
        bins[n] = os.path.abspath(b)
    return bins


def mkbundle(path, cgroups_path, memory, pids, args=None):
    argv = [MKBUNDLE, path, "--memory", str(memory), "--pids", str(pids), "--cgroups-path", cgroups_path]
    if args:
        argv += ["--"] + list(args)
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError("mkbundle.sh failed: %s" % (r.stderr.strip() or r.stdout.strip()))
    with open(os.path.join(path, "config.json")) as f:
        return json.load(f)


def set_cgroups_path(bundle, config, cgroups_path):
    config["linux"]["cgroupsPath"] = cgroups_path
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f)


# --------------------------------------------------------------------------- session

class Session:
    """Lock, temp dir, subreaper, crun namespace, runtimes, and the cleanup of all of it."""

    def __init__(self, runtime_bins, crun_ns="auto", clean_stale=False, tag="bench", state_tmpfs=True):
        self.runtime_bins = runtime_bins
        self.state_tmpfs = state_tmpfs
        self.state_mount = None
        self.own_config = False
        self.crun_ns_mode = crun_ns
        self.clean_stale = clean_stale
        self.tag = tag
        self.lock_fd = None
        self.tmp = None
        self.ns = None
        self.runtimes = {}
        self.mounts = []
        self.notes = []
        self.owns_cgroups = False     # set once the lock is held and no stale cgroups were found
        self.strays_reaped = 0        # other orphans re-parented to us (e.g. a runtime's monitor process)
        self._old_handlers = {}

    # -- setup
    def __enter__(self):
        if os.geteuid() != 0:
            raise BenchError("must run as root")
        # Ctrl-C, SIGTERM (and SIGHUP unless nohup'ed) -> KeyboardInterrupt -> cleanup. SIGINT is set
        # explicitly: a shell without job control starts background jobs with SIGINT ignored.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
                continue
            self._old_handlers[sig] = signal.signal(sig, _raise_interrupt)
        try:
            self._setup()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _setup(self):
        self.lock_fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchError("another bench run holds %s" % LOCK_PATH)
        self.mounts = cgroup_mounts()
        stale = [d for d in (os.path.join(m, CG_PARENT) for m in self.mounts) if os.path.isdir(d)]
        stale_children = [d for d in stale if any(os.path.isdir(os.path.join(d, e)) for e in os.listdir(d))]
        if stale_children and not self.clean_stale:
            raise BenchError("stale cgroups from an earlier run under %s; re-run with --clean-stale to remove them"
                             " (kills their processes)" % ", ".join(stale_children))
        self.owns_cgroups = True
        set_child_subreaper()
        self.tmp = tempfile.mkdtemp(prefix="paddock-%s." % self.tag)
        os.chmod(self.tmp, 0o755)
        self.io_dir = os.path.join(self.tmp, "io")
        os.makedirs(self.io_dir)
        empty = os.path.join(self.io_dir, "stdin")
        open(empty, "w").close()
        state = os.path.join(self.tmp, "state")
        os.makedirs(state)
        if self.state_tmpfs:
            # Before crun's namespace is made, so that it sees the same mount.
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=512m", "paddock-bench-state", state],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise BenchError("mount tmpfs at %s: %s" % (state, r.stderr.strip()))
            self.state_mount = state
            self.notes.append("runtime state roots (--root) on a tmpfs, as /run is on a standard node")
            self.node_state_on_tmpfs(state)
        need_ns = "crun" in self.runtime_bins and (
            self.crun_ns_mode == "always" or (self.crun_ns_mode == "auto" and is_hybrid()))
        if need_ns:
            self.ns = CrunNamespace(self.tmp)
            self.ns.start()
            self.notes.append("crun runs in a private mount namespace (holder pid %d) without %s; "
                              "verified: unmounted inside, still mounted outside" % (self.ns.holder.pid, UNIFIED))
        for name, b in self.runtime_bins.items():
            root = os.path.join(state, name)
            os.makedirs(root)
            rt = Runtime(name, b, root, self.ns if name == "crun" else None)
            rt.errlog_path = os.path.join(self.io_dir, name + ".err")
            rt.errlog = os.open(rt.errlog_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            rt.stdin_fd = os.open(empty, os.O_RDONLY | os.O_CLOEXEC)
            self.runtimes[name] = rt

    def node_state_on_tmpfs(self, state):
        """paddock also keeps node-wide state under /run (its CPU registry, its identity
        leases): put those on the same tmpfs, through a node config of the bench's own, unless
        the node or the caller has a config already (then it is used as it is)."""
        if "paddock" not in self.runtime_bins:
            return
        if paddock_node_config_exists(os.environ):
            self.notes.append("paddock's node config is the node's own: its /run state stays where it says")
            return
        config = node_config(state)
        os.environ["PADDOCK_CONFIG"] = config
        self.own_config = True
        self.notes.append("paddock's node state (CPU registry, identity leases) on that tmpfs too, "
                          "through PADDOCK_CONFIG=%s" % config)

    def __exit__(self, et, ev, tb):
        self.cleanup()
        return False

    # -- reaping
    def reap_strays(self):
        """Reap zombies re-parented to us (never the namespace holder, never a running Popen)."""
        holder = self.ns.holder.pid if self.ns and self.ns.holder else None
        n = 0
        while True:
            try:
                si = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if si is None or si.si_pid == 0 or si.si_pid == holder:
                break
            try:
                os.waitpid(si.si_pid, os.WNOHANG)
            except ChildProcessError:
                pass
            n += 1
        self.strays_reaped += n
        return n

    # -- cleanup
    def cleanup(self):
        """Idempotent; runs with SIGINT/SIGTERM ignored so a second Ctrl-C cannot cut it short."""
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            self._cleanup()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            for sig, h in self._old_handlers.items():
                signal.signal(sig, h)
            self._old_handlers = {}

    def _cleanup(self):
        if self.ns:
            try:
                self.ns.leave(force=True)
            except OSError as e:
                log("warning: setns back failed: %s" % e)
        # 1. containers: every id we created and did not delete, and anything left in our state roots
        for rt in self.runtimes.values():
            ids = set(rt.live)
            if os.path.isdir(rt.root):
                ids |= {e for e in os.listdir(rt.root) if os.path.isdir(os.path.join(rt.root, e))}
            for cid in sorted(ids):
                log("cleanup: %s delete --force %s" % (rt.name, cid))
                rt.force_delete(cid)
        # 2. our cgroups: kill what is still inside (by pid), then rmdir depth-first
        if self.owns_cgroups:
            left = remove_bench_cgroups(self.mounts)
            if left:
                log("warning: could not remove: %s" % ", ".join(left))
        # 3. the namespace holder, by pid
        if self.ns:
            self.ns.close()
            self.ns = None
        self.reap_strays()
        # 4. fds and temp dir (refuse if anything is still mounted below it)
        for rt in self.runtimes.values():
            for fd in (rt.errlog, getattr(rt, "stdin_fd", None)):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            rt.errlog = rt.stdin_fd = None
        if self.own_config:
            os.environ.pop("PADDOCK_CONFIG", None)
            self.own_config = False
        if self.state_mount:
            r = subprocess.run(["umount", self.state_mount], capture_output=True, text=True)
            if r.returncode != 0:
                log("warning: umount %s: %s" % (self.state_mount, r.stderr.strip()))
            else:
                self.state_mount = None
        if self.tmp and os.path.isdir(self.tmp):
            mounted = [mp for mp, _ in mountinfo() if mp == self.tmp or mp.startswith(self.tmp + "/")]
            if mounted:
                log("warning: not removing %s, still mounted: %s" % (self.tmp, ", ".join(mounted)))
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def remove_bench_cgroups(mounts, timeout=20):
    """Remove <mount>/paddock-bench (and below) in every cgroup mount. Kills, by pid, any process
    still in those cgroups (only ever processes of the bench's own containers). Returns what remains."""
    roots = [os.path.join(m, CG_PARENT) for m in mounts if os.path.isdir(os.path.join(m, CG_PARENT))]
    deadline = time.monotonic() + timeout
    while roots and time.monotonic() < deadline:
        pids = set()
        for r in roots:
            for d, _, _ in os.walk(r):
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        pids.update(int(x) for x in f.read().split())
                except (FileNotFoundError, ValueError):
                    pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for r in roots:
            for d, _, _ in sorted(os.walk(r), key=lambda w: -w[0].count("/")):
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError:
                    pass
        roots = [r for r in roots if os.path.isdir(r)]
        if roots:
            time.sleep(0.05)
    return roots


class InitWatch:
    """A container init re-parented to the bench (subreaper), watched through a pidfd.

    Opened right after `create` (the init is then blocked before exec, so its pid cannot
    have been recycled). `exited_ns` is the perf_counter_ns at which the exit was seen;
    `status` the reaped wait status ("exit 0", "signal 9"), None if it was not our child."""

    def __init__(self, pid):
        self.pid = pid
        self.fd = os.pidfd_open(pid)
        self.exited_ns = None
        self.status = None

    @property
    def done(self):
        return self.exited_ns is not None

    def wait(self, timeout_s):
        if self.done:
            return True
        if wait_pidfd(self.fd, timeout_s):
            self.reap()
            return True
        return False

    def reap(self):
        if not self.done:
            self.exited_ns = time.perf_counter_ns()
            self.status = reap_pidfd(self.fd)

    def close(self):
        if self.fd is not None:
            if not self.done and wait_pidfd(self.fd, 0):
                self.reap()
            os.close(self.fd)
            self.fd = None


def spawn_wait(argv, stdin, stdout, stderr, timeout, what=None, watch=None):
    """Popen + wait for exit; returns the exit status.

    Not Popen.wait(timeout): with a timeout CPython polls waitpid(WNOHANG) with sleeps that
    grow to 50 ms, which quantizes every figure. Instead poll a pidfd of the child (wakes at
    its exit, exactly like a blocking waitpid) and then reap it with a blocking wait().
    watch: an InitWatch reaped the moment its process exits while the command runs (as a
    shim would), so a runtime that waits for its init to disappear is not stuck on a zombie
    that only the bench can reap."""
    p = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                         close_fds=True, start_new_session=True)
    fd = os.pidfd_open(p.pid)
    try:
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if watch is not None and not watch.done:
                poller.register(watch.fd, select.POLLIN)
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
                    raise BenchError("%s: %s timed out after %s s" % (what or argv[0], " ".join(argv), timeout))
                ready = {f for f, _ in poller.poll(int(left * 1000) + 1)}
                if watch is not None and watch.fd in ready:
                    watch.reap()
                    poller.unregister(watch.fd)
                if fd in ready:
                    break
        except KeyboardInterrupt:
            # the command runs in its own session: let it finish so cleanup sees a sane state
            if not wait_pidfd(fd, 30):
                os.kill(p.pid, signal.SIGKILL)
            p.wait()
            raise
        return p.wait()
    finally:
        os.close(fd)


def spawn_baseline(n=50):
    """Median cost (ms) of one subprocess.Popen()+wait() of /bin/true the way the bench launches runtimes."""
    xs = []
    true = shutil.which("true") or "/bin/true"
    with open(os.devnull, "w") as dn:     # /dev/null is fine here: /bin/true is not a container
        for _ in range(n):
            t0 = time.perf_counter_ns()
            spawn_wait([true], dn, dn, dn, 10)
            xs.append(time.perf_counter_ns() - t0)
    return statistics.median(xs) / 1e6


def make_order(names, i, mode, rng):
    if mode == "rotate":
        k = i % len(names)
        return names[k:] + names[:k]
    order = list(names)
    rng.shuffle(order)
    return order


def new_rng(seed):
    if seed is None:
        seed = random.randrange(1 << 31)
    return random.Random(seed), seed
