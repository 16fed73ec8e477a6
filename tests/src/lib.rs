//! Support for paddock's integration tests: they run the real `paddock` binary as root against
//! the real kernel, in bundles made from Debian's busybox-static, each with its own `--root`.
//!
//! The test process makes itself a child subreaper, as containerd's shim is: sandbox processes
//! orphaned by `paddock create` reparent to it, and [`reap_orphans`] collects them, so a zombie
//! left behind is a real leak. Run the tests with `--test-threads=1`: the leak checks compare
//! node-wide state (mounts, cgroup trees) before and after.

pub mod containerd;
pub mod cri;
pub mod net;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where `cargo build` puts the workspace's debug binaries (`.cargo/config.toml` names the
/// target, so they are under its name).
pub fn build_dir() -> PathBuf {
    workspace().join("target/x86_64-unknown-linux-gnu/debug")
}

/// The `paddock` binary under test: `$PADDOCK_BIN`, else the workspace's debug build.
pub fn paddock_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PADDOCK_BIN") {
        return PathBuf::from(p);
    }
    let p = build_dir().join("paddock");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Root tests say why they did nothing when not run as root, instead of failing.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        init_reaper();
        true
    } else {
        eprintln!("skipped: needs root (real namespaces and cgroups)");
        false
    }
}

static REAPER: Once = Once::new();

fn init_reaper() {
    REAPER.call_once(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER failed");
    });
}

/// Reaps every exited orphan that reparented to the test process.
pub fn reap_orphans() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// Pids of zombie processes on the host, except those of pid 1: on machines whose init does
/// not reap (containers, CI sandboxes) they pile up from unrelated work. Sandbox processes
/// never reparent there, since the test process is their subreaper.
pub fn zombies() -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(stat) = fs::read_to_string(e.path().join("stat")) {
                let mut rest = stat.rsplit_once(") ").map(|(_, r)| r.split_whitespace());
                let state = rest.as_mut().and_then(|r| r.next());
                let ppid = rest.as_mut().and_then(|r| r.next());
                if state == Some("Z") && ppid != Some("1") {
                    out.insert(pid);
                }
            }
        }
    }
    out
}

/// Everything of node-wide state that a sandbox could leak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    pub mounts: Vec<String>,
    pub cgroups: BTreeSet<PathBuf>,
    pub state: BTreeSet<PathBuf>,
    pub zombies: BTreeSet<i32>,
}

/// Takes a snapshot of mounts (mount point and source), the cgroup dirs under `cgroup_rel` in
/// every hierarchy, and the entries of the state root.
pub fn snapshot(root: &Path, cgroup_rel: &str) -> HostSnapshot {
    reap_orphans();
    let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", f.get(4).unwrap_or(&""), f.get(3).unwrap_or(&""))
        })
        .collect();
    mounts.sort();
    let mut cgroups = BTreeSet::new();
    for dir in cgroup_dirs_of(cgroup_rel) {
        walk_dirs(&dir, &mut cgroups);
    }
    // paddock's top cgroup (`/paddock` in every hierarchy, the runtime's `policy::CGROUP_ROOT`)
    // is made by the first create on a node (its cgroup-migration warm-up) and kept, as any
    // runtime keeps its parent cgroup: its appearance is no leak, anything under it is. (On a
    // fresh cgroup v2 guest the first test of a run saw it appear.)
    let top = cgroup_dirs_of("paddock");
    cgroups.retain(|d| !top.contains(d));
    let mut state = BTreeSet::new();
    walk_all(root, &mut state);
    HostSnapshot {
        mounts,
        cgroups,
        state,
        zombies: zombies(),
    }
}

fn walk_dirs(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        out.insert(dir.to_path_buf());
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk_dirs(&e.path(), out);
            }
        }
    }
}

fn walk_all(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            out.insert(e.path());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk_all(&e.path(), out);
            }
        }
    }
}

/// Whether `/sys/fs/cgroup` is the unified (cgroup v2) hierarchy.
pub fn cgroup_v2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// A world for the VM group's cgroup v2 tests: fails (rather than skips) without root or
/// cgroup v2, since the group only runs where both are meant to be.
pub fn v2_world() -> World {
    assert!(require_root(), "the VM group runs as root");
    assert!(
        cgroup_v2(),
        "/sys/fs/cgroup is not cgroup v2: run the VM group in the guest (scripts/vm-test.sh)"
    );
    World::new()
}

/// Where cgroup `rel` (e.g. `paddock/app/id`) can be: `/sys/fs/cgroup/<rel>` (cgroup v2) and
/// `/sys/fs/cgroup/<hierarchy>/<rel>` for every v1 hierarchy (and the hybrid's `unified`).
pub fn cgroup_dirs_of(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    let base = Path::new("/sys/fs/cgroup");
    let mut out = vec![base.join(rel)];
    if let Ok(entries) = fs::read_dir(base) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path().join(rel));
            }
        }
    }
    out
}

/// How many times slower than this machine the tests run: `$PADDOCK_TEST_TIME_SCALE` (the
/// VM guest under software emulation sets it), 1 by default. Every timeout here goes through
/// [`scaled`].
pub fn time_scale() -> u32 {
    std::env::var("PADDOCK_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// `d` stretched by [`time_scale`].
pub fn scaled(d: Duration) -> Duration {
    d * time_scale()
}

/// Asserts that nothing changed between two snapshots, waiting briefly for the kernel to
/// finish reaping, and naming what leaked.
pub fn assert_no_leak(before: &HostSnapshot, root: &Path, cgroup_rel: &str) {
    let deadline = Instant::now() + scaled(Duration::from_secs(5));
    loop {
        let after = snapshot(root, cgroup_rel);
        let new_zombies: Vec<_> = after.zombies.difference(&before.zombies).collect();
        let same = after.mounts == before.mounts
            && after.cgroups == before.cgroups
            && after.state == before.state
            && new_zombies.is_empty();
        if same {
            return;
        }
        if Instant::now() > deadline {
            let extra_mounts: Vec<_> = after
                .mounts
                .iter()
                .filter(|m| !before.mounts.contains(m))
                .collect();
            let extra_cg: Vec<_> = after.cgroups.difference(&before.cgroups).collect();
            let gone_cg: Vec<_> = before.cgroups.difference(&after.cgroups).collect();
            let extra_state: Vec<_> = after.state.difference(&before.state).collect();
            let gone_state: Vec<_> = before.state.difference(&after.state).collect();
            let gone_mounts: Vec<_> = before
                .mounts
                .iter()
                .filter(|m| !after.mounts.contains(m))
                .collect();
            let zinfo: Vec<String> = new_zombies
                .iter()
                .map(|p| fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
                .collect();
            panic!(
                "leak: zombies {zinfo:?}, mounts {extra_mounts:?}, cgroups {extra_cg:?} (gone {gone_cg:?}), \
                 state {extra_state:?} (gone {gone_state:?}), zombies {new_zombies:?}, \
                 mounts gone {gone_mounts:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A test's private world: a temp dir holding bundles, the `--root` state dir and log files.
pub struct World {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    counter: std::cell::Cell<u32>,
}

/// The result of one paddock invocation.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "paddock failed: {}", self.stderr);
        self
    }
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("paddock-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let root = dir.path().join("state");
        // Node policy of this world: its own quota store, so volumes stay inside the temp dir,
        // and its own CPU registry.
        let config = format!(
            "[quota]\nstore = \"{}\"\n[cpu]\nstate_dir = \"{}\"\n",
            dir.path().join("quota").display(),
            dir.path().join("cpu").display()
        );
        fs::write(dir.path().join("config.toml"), config)
            .unwrap_or_else(|e| panic!("write config: {e}"));
        Self {
            dir,
            root,
            counter: std::cell::Cell::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites this world's node config with an identity pool of its own.
    pub fn set_pool(&self, base: u32, size: u32) {
        let config = format!(
            "[identity]\nbase = {base}\nsize = {size}\nlease_dir = \"{}\"\n[quota]\nstore = \"{}\"\n\
             [cpu]\nstate_dir = \"{}\"\n",
            self.path().join("leases").display(),
            self.path().join("quota").display(),
            self.path().join("cpu").display()
        );
        fs::write(self.path().join("config.toml"), config)
            .unwrap_or_else(|e| panic!("write config: {e}"));
    }

    /// Makes a busybox bundle; `extra` are mkbundle.sh options then `--` and the argv.
    pub fn bundle(&self, name: &str, extra: &[&str]) -> PathBuf {
        let dir = self.path().join(name);
        let out = Command::new(workspace().join("scripts/mkbundle.sh"))
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("mkbundle: {e}"));
        assert!(
            out.status.success(),
            "mkbundle: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    /// A bundle running `sh -c script` with these annotations and, when given, a spec CPU list
    /// (`linux.resources.cpu.cpus`).
    pub fn annotated_bundle(
        &self,
        name: &str,
        annotations: serde_json::Value,
        cpus: Option<&str>,
        script: &str,
    ) -> PathBuf {
        let b = self.bundle(name, &["--", "sh", "-c", script]);
        self.edit_spec(&b, |v| {
            v["annotations"] = annotations;
            if let Some(c) = cpus {
                v["linux"]["resources"]["cpu"] = serde_json::json!({ "cpus": c });
            }
        });
        b
    }

    /// Edits a bundle's config.json.
    pub fn edit_spec(&self, bundle: &Path, f: impl FnOnce(&mut serde_json::Value)) {
        let path = bundle.join("config.json");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read spec: {e}"));
        let mut v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse spec: {e}"));
        f(&mut v);
        fs::write(&path, v.to_string()).unwrap_or_else(|e| panic!("write spec: {e}"));
    }

    /// Runs `paddock --root <root> args…` with stdio on files (a sandbox inherits them, so a
    /// pipe would keep the test waiting for EOF), and reaps orphans afterwards.
    pub fn paddock(&self, args: &[&str]) -> Run {
        self.paddock_with_stdin(args, None)
    }

    pub fn paddock_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let n = self.counter.get();
        self.counter.set(n + 1);
        let out_path = self.path().join(format!("out.{n}"));
        let err_path = self.path().join(format!("err.{n}"));
        let open = |p: &Path| File::create(p).unwrap_or_else(|e| panic!("create {p:?}: {e}"));
        let stdin = match stdin {
            Some(text) => {
                let p = self.path().join(format!("in.{n}"));
                fs::write(&p, text).unwrap_or_else(|e| panic!("write stdin: {e}"));
                Stdio::from(File::open(&p).unwrap_or_else(|e| panic!("open stdin: {e}")))
            }
            None => Stdio::from(open(&self.path().join(format!("in.{n}")))),
        };
        let status = Command::new(paddock_bin())
            .env("PADDOCK_CONFIG", self.path().join("config.toml"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(stdin)
            .stdout(open(&out_path))
            .stderr(open(&err_path))
            .status()
            .unwrap_or_else(|e| panic!("spawn paddock: {e}"));
        reap_orphans();
        let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: read(&out_path),
            stderr: read(&err_path),
        }
    }

    /// Starts `paddock --root <root> args…` in the background with stdout to a file.
    pub fn spawn(&self, args: &[&str]) -> Background {
        let n = self.counter.get();
        self.counter.set(n + 1);
        let out = self.path().join(format!("bg.{n}"));
        let file = File::create(&out).unwrap_or_else(|e| panic!("create {out:?}: {e}"));
        let err = File::create(out.with_extension("err"))
            .unwrap_or_else(|e| panic!("create {out:?}.err: {e}"));
        let child = Command::new(paddock_bin())
            .env("PADDOCK_CONFIG", self.path().join("config.toml"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn paddock: {e}"));
        Background { child, out }
    }

    /// `paddock state` as JSON.
    pub fn state(&self, id: &str) -> serde_json::Value {
        let r = self.paddock(&["state", id]);
        assert_eq!(r.code, 0, "state {id}: {}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("state json: {e}"))
    }

    /// Waits until the sandbox reports `status`.
    pub fn wait_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + scaled(Duration::from_secs(10));
        loop {
            if self.state(id)["status"] == status {
                return;
            }
            assert!(Instant::now() < deadline, "{id} never reached {status}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes every sandbox left under this world's root (a failed test must not leak).
    pub fn cleanup(&self) {
        if let Ok(entries) = fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    self.paddock(&["delete", "--force", &name]);
                }
            }
        }
        if let Ok(entries) = fs::read_dir(self.root.join(".paddock")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                self.paddock(&["delete", "--force", &name]);
            }
        }
        reap_orphans();
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A paddock process running in the background (e.g. `events`).
pub struct Background {
    child: std::process::Child,
    out: PathBuf,
}

impl Background {
    /// What it printed so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn errors(&self) -> String {
        fs::read_to_string(self.out.with_extension("err")).unwrap_or_default()
    }

    /// Waits until it exits on its own (reaped here or by [`reap_orphans`]).
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let pid = self.child.id() as i32;
        eventually(timeout, || match self.child.try_wait() {
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(_) => !alive(pid),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Is `pid` alive (not a zombie)?
/// A kernel file's text without its trailing newline; panics naming the file.
pub fn read_trimmed(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// A counter of a flat-keyed file such as `memory.events` or `cgroup.events`.
pub fn flat_counter(p: &Path, key: &str) -> u64 {
    read_trimmed(p)
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{key} not in {}", p.display()))
}

pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, r)| r.chars().next())
            .is_some_and(|s| s != 'Z' && s != 'X'),
        Err(_) => false,
    }
}

/// Pids listed in a cgroup dir's `cgroup.procs` (and its children).
pub fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(t) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(cgroup_pids(&e.path()));
            }
        }
    }
    out
}

/// Polls `f` until it returns true or `timeout` (times [`time_scale`]) passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Builds `tests/fixtures/<name>.c` with gcc and `flags` into `out`, which must succeed.
#[track_caller]
pub fn gcc_fixture(name: &str, flags: &[&str], out: &Path) {
    let src = workspace().join(format!("tests/fixtures/{name}.c"));
    let built = Command::new("gcc")
        .args(flags)
        .arg("-O2")
        .arg("-o")
        .arg(out)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("run gcc: {e}"));
    assert!(
        built.status.success(),
        "gcc {name}.c: {}",
        String::from_utf8_lossy(&built.stderr)
    );
}

/// Output of a plain command, for host-side checks.
pub fn sh(cmd: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap_or_else(|e| panic!("sh {cmd}: {e}"))
}
