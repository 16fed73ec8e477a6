//! A private containerd for integration tests, and a generic exercise of containerd's runc shim
//! (`io.containerd.runc.v2`) with any runc-compatible binary.
//!
//! [`Containerd::start`] runs `/usr/bin/containerd --config <dir>/config.toml` with its root,
//! state, temp dir, grpc/ttrpc/debug sockets and `opt` dir all under a fresh
//! `/run/paddock-test-ctd-XXXXXX`, the CRI plugin off (unless [`ContainerdConfig::cri`]) and
//! overlayfs as the snapshotter. Every
//! instance has its own unique namespace (`paddock-test-<pid>-<n>`), so the cgroups its
//! containers get (`/<namespace>/<id>` under every hierarchy) are recognisably its own.
//!
//! Things containerd 1.6 does NOT take from its config file (found on this machine):
//! - runtime options such as `BinaryName`: the `runtimes` tables live in the CRI plugin only;
//!   for a plain client (ctr, the Go/Rust API) the options travel with each container. So
//!   [`Containerd::ctr_run`] passes `--runc-binary <binary> --runc-root <dir>/runc-root
//!   --fifo-dir <dir>/fifo` (the last two keep runc state and stdio FIFOs out of
//!   `/run/containerd`).
//! - the shim's socket: always `/run/containerd/s/<sha256(address/ns/id)>`
//!   ([`Containerd::shim_socket`]); teardown removes leftovers.
//!
//! Dropping a [`Containerd`] (or calling [`Containerd::stop`]) removes tasks and containers,
//! stops containerd by pid, kills leftover shims by pid, unmounts what is mounted under its
//! directory, removes its namespace's cgroups and the directory. [`Footprint::leaks`] checks
//! afterwards that nothing is left.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The containerd daemon binary (Debian package `containerd`).
pub const CONTAINERD: &str = "/usr/bin/containerd";
/// The ctr client (Debian package `containerd`).
pub const CTR: &str = "/usr/bin/ctr";
/// The image reference [`Containerd::import_busybox`] imports.
pub const BUSYBOX_REF: &str = "localhost/paddock/busybox:latest";
/// How long one ctr call may take before the harness kills it.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);
/// How long containerd may take to answer on its socket (times [`crate::time_scale`]: in the
/// emulated cgroup v2 guest a loaded containerd start took longer than 20 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Where Debian puts runc.
pub const STOCK_RUNC: &str = "/usr/sbin/runc";

const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// containerd's runtime name of paddock's shim (`containerd-shim-paddock-v2`).
pub const PADDOCK_RUNTIME: &str = "io.containerd.paddock.v2";
/// Where paddock's shim keeps sandbox state by default: `<this>/<namespace>/<id>`.
pub const PADDOCK_SHIM_STATE: &str = "/run/paddock/containerd";

/// Number of live [`Containerd`] instances in this process.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Sequence for namespace names.
static SEQ: AtomicUsize = AtomicUsize::new(0);
/// Whether /run/containerd existed before this process first started a containerd.
static RUN_CONTAINERD_PREEXISTED: OnceLock<bool> = OnceLock::new();
/// Serialises the clean-up of the shared `/run/containerd/s` directory.
static SHARED_DIR_LOCK: Mutex<()> = Mutex::new(());

/// Any failure of the harness: one line (or a few, with containerd's log) saying what and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessError(pub String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

/// Result type of the harness.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

fn err(msg: impl Into<String>) -> HarnessError {
    HarnessError(msg.into())
}

/// Whether the process runs as root (every test here needs it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether the containerd tests can run: root (else says why it skips, false) with the
/// `containerd` package installed.
pub fn containerd_ready() -> Result<bool> {
    if !is_root() {
        eprintln!("skipped: containerd tests need root");
        return Ok(false);
    }
    ensure_packages(&["containerd"])?;
    Ok(true)
}

/// Installs missing Debian packages (`dpkg -s P || apt-get install -y P`), once per process
/// and package.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    static DONE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut done = DONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for pkg in packages {
        if done.contains(*pkg) {
            continue;
        }
        let present = Command::new("dpkg")
            .args(["-s", pkg])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !present {
            let out = run_with_timeout(
                Command::new("apt-get")
                    .args(["install", "-y", pkg])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                Duration::from_secs(600),
            );
            if !out.status.success() {
                return Err(err(format!(
                    "apt-get install -y {pkg} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        done.insert((*pkg).to_string());
    }
    Ok(())
}

/// The stock runc of this machine (`/usr/sbin/runc` on Debian), if installed.
pub fn stock_runc() -> Option<PathBuf> {
    ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// How to start a private containerd.
#[derive(Debug, Clone, Default)]
pub struct ContainerdConfig {
    /// `BinaryName` of the runc shim: the runc-compatible binary it execs. [`Containerd::ctr_run`]
    /// passes it as `--runc-binary`. `None`: the shim runs `runc` from its PATH.
    pub runc_binary: Option<PathBuf>,
    /// Runtime for [`Containerd::ctr_run`] (`--runtime`); `None` = `io.containerd.runc.v2`.
    /// For another runtime (e.g. `io.containerd.paddock.v2`) the runc-only flags
    /// `--runc-binary`/`--runc-root` are not passed.
    pub runtime: Option<String>,
    /// Directories put in front of containerd's PATH (containerd 1.6 finds shim binaries
    /// `containerd-shim-<name>-<version>` on its PATH; the shim inherits it).
    pub path_prepend: Vec<PathBuf>,
    /// Raw TOML appended to the generated config.toml (it defines `[plugins."io.containerd.gc.v1.scheduler"]`
    /// and `[plugins."io.containerd.internal.v1.opt"]` itself; do not repeat those tables).
    pub extra_toml: String,
    /// Namespace for [`Containerd::ctr`]; default a unique `paddock-test-<pid>-<n>`. Leave it
    /// unset unless you must: teardown removes the cgroup tree `/<namespace>` only for the
    /// namespace it generated (for others it removes `/<namespace>/<id>` of the containers it saw).
    pub namespace: Option<String>,
    /// Leave containerd's CRI plugin (`io.containerd.grpc.v1.cri`) on, configured by
    /// [`crate::cri::plugin_toml`] with its state, CNI and runtime dirs in ours.
    pub cri: Option<crate::cri::CriSetup>,
}

impl ContainerdConfig {
    /// paddock's shim: [`Containerd::ctr_run`] passes `--runtime io.containerd.paddock.v2`, and
    /// `bin_dir` (holding `containerd-shim-paddock-v2` and `paddock`, as `cargo build` leaves
    /// them in [`crate::build_dir`]) comes first on containerd's PATH, where containerd finds shims.
    pub fn paddock_shim(bin_dir: &Path) -> Self {
        ContainerdConfig {
            runtime: Some(PADDOCK_RUNTIME.to_string()),
            path_prepend: vec![bin_dir.to_path_buf()],
            ..ContainerdConfig::default()
        }
    }
}

/// A private containerd, stopped and cleaned up on drop.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    address: PathBuf,
    namespace: String,
    own_namespace: bool,
    config: ContainerdConfig,
    child: Option<Child>,
    start_time: Duration,
    footprint: Option<Footprint>,
}

/// The directory of the built `paddock` and `containerd-shim-paddock-v2` (which containerd
/// finds on its PATH), checked to hold the shim.
pub fn paddock_shim_dir() -> PathBuf {
    let dir = crate::paddock_bin()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let shim = dir.join("containerd-shim-paddock-v2");
    assert!(
        shim.exists(),
        "{} is missing: run `cargo build` first (scripts/test.sh does)",
        shim.display()
    );
    dir
}

impl Containerd {
    /// Starts containerd and waits until `ctr version` answers on its socket.
    pub fn start(config: ContainerdConfig) -> Result<Self> {
        let began = Instant::now();
        if !is_root() {
            return Err(err("a private containerd needs root"));
        }
        ensure_packages(&["containerd"])?;
        RUN_CONTAINERD_PREEXISTED.get_or_init(|| Path::new("/run/containerd").exists());
        let base = if Path::new("/run").is_dir() {
            PathBuf::from("/run")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("paddock-test-ctd-")
            .tempdir_in(&base)
            .map_err(|e| {
                err(format!(
                    "cannot create a temp dir in {}: {e}",
                    base.display()
                ))
            })?
            .keep();
        LIVE.fetch_add(1, Ordering::SeqCst);
        let (namespace, own_namespace) = match &config.namespace {
            Some(ns) => (ns.clone(), false),
            None => (
                format!(
                    "paddock-test-{}-{}",
                    std::process::id(),
                    SEQ.fetch_add(1, Ordering::SeqCst)
                ),
                true,
            ),
        };
        // From here on, dropping `me` cleans up whatever was made.
        let mut me = Containerd {
            address: dir.join("containerd.sock"),
            dir,
            namespace,
            own_namespace,
            config,
            child: None,
            start_time: Duration::ZERO,
            footprint: None,
        };
        for sub in ["root", "state", "tmp", "opt", "runc-root", "fifo"] {
            let p = me.dir.join(sub);
            fs::create_dir_all(&p)
                .map_err(|e| err(format!("cannot create {}: {e}", p.display())))?;
        }
        let config_path = me.dir.join("config.toml");
        fs::write(&config_path, me.config_toml())
            .map_err(|e| err(format!("cannot write {}: {e}", config_path.display())))?;
        me.launch(began)?;
        me.start_time = began.elapsed();
        Ok(me)
    }

    /// Spawns the daemon on the existing config and waits until `ctr version` answers.
    fn launch(&mut self, began: Instant) -> Result<()> {
        let config_path = self.dir.join("config.toml");
        let log_path = self.log_path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| err(format!("cannot open {}: {e}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| err(format!("cannot dup log fd: {e}")))?;
        let mut path: Vec<PathBuf> = self.config.path_prepend.clone();
        if let Some(old) = std::env::var_os("PATH") {
            path.extend(std::env::split_paths(&old));
        }
        let path =
            std::env::join_paths(path).map_err(|e| err(format!("bad PATH for containerd: {e}")))?;
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(&config_path)
            .env("PATH", path)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| err(format!("cannot start {CONTAINERD}: {e}")))?;
        self.child = Some(child);
        let start_timeout = crate::scaled(START_TIMEOUT);
        let deadline = began + start_timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        return Err(err(format!(
                            "containerd exited during start-up ({status}); its log:\n{}",
                            self.log()
                        )))
                    }
                    Ok(None) => {}
                    Err(e) => return Err(err(format!("cannot wait for containerd: {e}"))),
                }
            }
            if self.address.exists() {
                let out = run_with_timeout(
                    Command::new(CTR)
                        .arg("--address")
                        .arg(&self.address)
                        .arg("version"),
                    Duration::from_secs(5),
                );
                if out.status.success() {
                    break;
                }
            }
            if Instant::now() >= deadline {
                return Err(err(format!(
                    "containerd did not answer on {} within {:?}; its log:\n{}",
                    self.address.display(),
                    start_timeout,
                    self.log()
                )));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Stops containerd (SIGTERM, by pid) and starts it again on the same state, the way an
    /// operator restarts the daemon: shims and their tasks keep running meanwhile.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(10))?;
        }
        self.launch(Instant::now())
    }

    fn config_toml(&self) -> String {
        let d = &self.dir;
        let q = |p: PathBuf| toml_str(&p.to_string_lossy());
        format!(
            r#"# generated by paddock-tests (tests/src/containerd.rs)
version = 2
root = {root}
state = {state}
temp = {temp}
oom_score = 0
disabled_plugins = [{cri}
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {grpc}
  uid = 0
  gid = 0

[ttrpc]
  address = {ttrpc}
  uid = 0
  gid = 0

[debug]
  address = {debug}
  level = "debug"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.gc.v1.scheduler"]
    startup_delay = "100ms"
  # default /opt/containerd: keep it in our directory
  [plugins."io.containerd.internal.v1.opt"]
    path = {opt}

{extra}
{cri_tables}
"#,
            root = q(d.join("root")),
            state = q(d.join("state")),
            temp = q(d.join("tmp")),
            grpc = q(d.join("containerd.sock")),
            ttrpc = q(d.join("containerd.sock.ttrpc")),
            debug = q(d.join("debug.sock")),
            opt = q(d.join("opt")),
            extra = self.config.extra_toml,
            cri = if self.config.cri.is_some() {
                ""
            } else {
                "\n  \"io.containerd.grpc.v1.cri\","
            },
            cri_tables = self
                .config
                .cri
                .as_ref()
                .map(|setup| crate::cri::plugin_toml(d, setup))
                .unwrap_or_default(),
        )
    }

    /// The grpc socket (`ctr --address`).
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The ttrpc socket.
    pub fn ttrpc_address(&self) -> PathBuf {
        self.dir.join("containerd.sock.ttrpc")
    }

    /// The namespace [`Containerd::ctr`] uses.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The temp directory holding everything of this containerd.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's `root`.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// containerd's `state`; task bundles are `state/io.containerd.runtime.v2.task/<ns>/<id>`.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The runc `--root` given to the runc shim by [`Containerd::ctr_run`] (the shim appends
    /// `/<namespace>`).
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc-root")
    }

    /// Directory for ctr's stdio FIFOs (pass as `--fifo-dir` to `ctr task start/exec`).
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir.join("fifo")
    }

    /// The bundle directory the shim gets for a task.
    pub fn bundle(&self, namespace: &str, id: &str) -> PathBuf {
        self.state()
            .join("io.containerd.runtime.v2.task")
            .join(namespace)
            .join(id)
    }

    /// containerd's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How long [`Containerd::start`] took until the socket answered.
    pub fn start_time(&self) -> Duration {
        self.start_time
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// containerd's log so far (stdout and stderr, level debug).
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(cannot read containerd log: {e})"))
    }

    /// `out` of a ctr call named `what`, which must have succeeded; its stdout.
    #[track_caller]
    pub fn expect_ok(&self, what: &str, out: Output) -> String {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(
            out.status.success(),
            "{what}: {}; stdout {:?}; stderr {:?}\ncontainerd log tail:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr),
            self.log_tail(30)
        );
        text(&out.stdout)
    }

    /// `ctr ARGS`, which must succeed; its stdout.
    #[track_caller]
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        self.expect_ok(&format!("ctr {args:?}"), self.ctr(args))
    }

    /// `ctr run` with the harness's flags ([`Containerd::ctr_run`]), which must succeed; its
    /// stdout.
    #[track_caller]
    pub fn ctr_run_ok(&self, args: &[&str]) -> String {
        self.expect_ok(&format!("ctr run {args:?}"), self.ctr_run(args))
    }

    /// `ctr tasks exec FLAGS --fifo-dir <fifo dir> --exec-id EXEC_ID ID ARGV…`.
    pub fn ctr_exec(&self, flags: &[&str], id: &str, exec_id: &str, argv: &[&str]) -> Output {
        let fifo = self.fifo_dir();
        let fifo = fifo.to_string_lossy();
        let mut args = vec!["tasks", "exec"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--fifo-dir", &fifo, "--exec-id", exec_id, id]);
        args.extend_from_slice(argv);
        self.ctr(&args)
    }

    /// The pids `ctr tasks ps ID` lists.
    pub fn task_pids(&self, id: &str) -> Vec<u32> {
        self.ctr_ok(&["tasks", "ps", id])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// Stops containerd and asserts that nothing it or the shims made is left.
    #[track_caller]
    pub fn stop_and_assert_clean(self) {
        let leaks = self.stop().leaks();
        assert!(leaks.is_empty(), "leaks after teardown: {leaks:#?}");
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs `ctr --address <sock> --namespace <ns> ARGS` (stdin /dev/null, killed after
    /// [`CTR_TIMEOUT`]). Never panics: if ctr cannot run, the output has exit code 127, on
    /// timeout 124, with the reason in stderr.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_ns_timeout(&self.namespace, args, CTR_TIMEOUT)
    }

    /// [`Containerd::ctr`] in another namespace.
    pub fn ctr_ns(&self, namespace: &str, args: &[&str]) -> Output {
        self.ctr_ns_timeout(namespace, args, CTR_TIMEOUT)
    }

    /// [`Containerd::ctr`] with another timeout.
    pub fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        self.ctr_ns_timeout(&self.namespace, args, timeout)
    }

    fn ctr_ns_timeout(&self, namespace: &str, args: &[&str], timeout: Duration) -> Output {
        run_with_timeout(&mut self.ctr_command_ns(namespace, args), timeout)
    }

    /// The `ctr --address <sock> --namespace <ns> ARGS` command, to spawn yourself (e.g. with
    /// stdin piped; finish with [`wait_with_timeout`]).
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        self.ctr_command_ns(&self.namespace, args)
    }

    fn ctr_command_ns(&self, namespace: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(CTR);
        cmd.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(namespace)
            .args(args);
        cmd
    }

    /// The flags [`Containerd::ctr_run`] puts right after `run`: `--fifo-dir`, `--runtime`
    /// (if configured) and, for the runc shim, `--runc-binary` (if configured) and `--runc-root`.
    pub fn run_flags(&self) -> Vec<OsString> {
        let mut flags: Vec<OsString> = vec!["--fifo-dir".into(), self.fifo_dir().into()];
        let runc_shim = match &self.config.runtime {
            Some(rt) => {
                flags.push("--runtime".into());
                flags.push(rt.into());
                rt == "io.containerd.runc.v2"
            }
            None => true,
        };
        if runc_shim {
            if let Some(bin) = &self.config.runc_binary {
                flags.push("--runc-binary".into());
                flags.push(bin.into());
            }
            flags.push("--runc-root".into());
            flags.push(self.runc_root().into());
        }
        flags
    }

    /// `ctr run <run_flags> ARGS`, e.g. `ctr_run(&["--rm", BUSYBOX_REF, "id", "sh", "-c", "…"])`.
    /// Flags in ARGS must come before the image (urfave/cli stops at the first positional).
    pub fn ctr_run(&self, args: &[&str]) -> Output {
        self.ctr_run_timeout(args, CTR_TIMEOUT)
    }

    /// [`Containerd::ctr_run`] with another timeout.
    pub fn ctr_run_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        run_with_timeout(&mut self.ctr_run_command(args), timeout)
    }

    /// The `ctr … run <run_flags> ARGS` command, to spawn yourself.
    pub fn ctr_run_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.ctr_command(&["run"]);
        cmd.args(self.run_flags()).args(args);
        cmd
    }

    /// Imports the busybox image (built once per test process by
    /// `tests/fixtures/busybox-image.sh`) into this containerd's namespace; returns its ref.
    pub fn import_busybox(&self) -> Result<String> {
        let tar = busybox_image_tar()?;
        let tar = tar.to_string_lossy();
        let out = self.ctr(&["images", "import", &tar]);
        if !out.status.success() {
            return Err(err(format!(
                "ctr images import {tar} failed ({}): {}\ncontainerd log tail:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail(20)
            )));
        }
        Ok(BUSYBOX_REF.to_string())
    }

    /// The socket containerd 1.6's runc shim listens on for a task:
    /// `/run/containerd/s/<hex sha256("<address>/<ns>/<id>")>` (Go `filepath.Join`).
    pub fn shim_socket(&self, namespace: &str, id: &str) -> Option<PathBuf> {
        let key = format!("{}/{namespace}/{id}", self.address.display());
        sha256_hex(key.as_bytes()).map(|h| Path::new(SHIM_SOCKET_DIR).join(h))
    }

    /// Pids of live processes whose command line has an argument containing our directory
    /// (containerd itself, our shims `-address <dir>/containerd.sock`, anything else).
    pub fn processes(&self) -> Vec<(i32, String)> {
        processes_mentioning(&self.dir.to_string_lossy())
    }

    /// Pids of live shims started by this containerd (`-address <our socket>`).
    pub fn shim_pids(&self) -> Vec<i32> {
        shim_pids(&self.address)
    }

    /// What is left of containers `ids` (of our namespace) once they are deleted: mounts under
    /// the bundles, shims, runc state, shim sockets, cgroups `/<ns>/<id>`. Empty = clean.
    pub fn container_leftovers(&self, ids: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        let ns = &self.namespace;
        for id in ids {
            let bundle = self.bundle(ns, id);
            for m in mounts_under(&bundle) {
                found.push(format!("container {id}: mount {m} remains"));
            }
            if bundle.exists() {
                found.push(format!(
                    "container {id}: bundle {} remains",
                    bundle.display()
                ));
            }
            let paddock_state = Path::new(PADDOCK_SHIM_STATE).join(ns);
            for dir in [
                paddock_state.join(id),
                paddock_state.join(".paddock").join(id),
            ] {
                if dir.exists() {
                    found.push(format!(
                        "container {id}: paddock state {} remains",
                        dir.display()
                    ));
                }
            }
            let state = self.runc_root().join(ns).join(id);
            if state.exists() {
                found.push(format!(
                    "container {id}: runc state {} remains",
                    state.display()
                ));
            }
            if let Some(sock) = self.shim_socket(ns, id) {
                if sock.exists() {
                    found.push(format!(
                        "container {id}: shim socket {} remains",
                        sock.display()
                    ));
                }
            }
            for mnt in cgroup_mounts() {
                let cg = mnt.join(ns).join(id);
                if cg.exists() {
                    found.push(format!("container {id}: cgroup {} remains", cg.display()));
                }
            }
        }
        for pid in self.shim_pids() {
            found.push(format!(
                "shim pid {pid} ({}) still runs",
                cmdline_string(pid)
            ));
        }
        found
    }

    /// Polls [`Containerd::container_leftovers`] until empty or `timeout`; returns the last.
    pub fn wait_containers_gone(&self, ids: &[&str], timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + crate::scaled(timeout);
        loop {
            let left = self.container_leftovers(ids);
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops and cleans up now; returns what to check with [`Footprint::leaks`].
    pub fn stop(mut self) -> Footprint {
        self.teardown()
    }

    fn teardown(&mut self) -> Footprint {
        if let Some(fp) = &self.footprint {
            return fp.clone();
        }
        let mut problems = Vec::new();
        let mut containers: BTreeSet<(String, String)> = BTreeSet::new();
        let mut namespaces: BTreeSet<String> = BTreeSet::new();
        namespaces.insert(self.namespace.clone());

        let mut known_shims: BTreeSet<i32> = self.shim_pids().into_iter().collect();
        let alive = self
            .child
            .as_mut()
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .unwrap_or(false);
        if alive {
            // 1. remove tasks and containers of every namespace
            let out = self.ctr_ns_timeout(
                &self.namespace,
                &["namespaces", "ls", "-q"],
                Duration::from_secs(10),
            );
            if out.status.success() {
                namespaces.extend(lines(&out.stdout));
            }
            for ns in &namespaces {
                let short = Duration::from_secs(30);
                let tasks = self.ctr_ns_timeout(ns, &["tasks", "ls", "-q"], short);
                let mut failed = Vec::new();
                for id in lines(&tasks.stdout) {
                    let out = self.ctr_ns_timeout(ns, &["tasks", "rm", "-f", &id], short);
                    if !out.status.success() && !gone_msg(&out) {
                        failed.push((id, out));
                    }
                }
                // The CRI plugin deletes the task of an exited container itself: a delete racing
                // with it fails ("ttrpc: closed" once the shim quits with its last task) though
                // the task is gone. Only a task still listed is a problem.
                if !failed.is_empty() {
                    let left = self.ctr_ns_timeout(ns, &["tasks", "ls", "-q"], short);
                    let left = lines(&left.stdout);
                    for (id, out) in failed.into_iter().filter(|(id, _)| left.contains(id)) {
                        problems.push(format!(
                            "ctr -n {ns} tasks rm -f {id}: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ));
                    }
                }
                let cs = self.ctr_ns_timeout(ns, &["containers", "ls", "-q"], short);
                for id in lines(&cs.stdout) {
                    let out = self.ctr_ns_timeout(ns, &["containers", "rm", &id], short);
                    if !out.status.success() && !gone_msg(&out) {
                        problems.push(format!(
                            "ctr -n {ns} containers rm {id}: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ));
                    }
                    containers.insert((ns.clone(), id));
                }
            }
            // shims exit shortly after their task is deleted
            let deadline = Instant::now() + crate::scaled(Duration::from_secs(5));
            while !self.shim_pids().is_empty() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }

        // bundles left behind (shim crashed or containerd gone) name their shim socket
        let task_dir = self.state().join("io.containerd.runtime.v2.task");
        let mut sockets: BTreeSet<PathBuf> = BTreeSet::new();
        for ns in read_dir_names(&task_dir) {
            namespaces.insert(ns.clone());
            for id in read_dir_names(&task_dir.join(&ns)) {
                if let Ok(addr) = fs::read_to_string(task_dir.join(&ns).join(&id).join("address")) {
                    let p = PathBuf::from(addr.trim().trim_start_matches("unix://"));
                    if p.starts_with(SHIM_SOCKET_DIR) {
                        sockets.insert(p);
                    }
                }
                containers.insert((ns.clone(), id));
            }
        }
        for (ns, id) in &containers {
            if let Some(s) = self.shim_socket(ns, id) {
                sockets.insert(s);
            }
        }

        // 2. containerd: SIGTERM by pid, then SIGKILL
        if let Some(mut child) = self.child.take() {
            if let Err(e) = stop_child(&mut child, Duration::from_secs(10)) {
                problems.push(e.0);
            }
        }

        // 3. leftover shims of this containerd, by pid
        let shims = self.shim_pids();
        known_shims.extend(shims.iter().copied());
        for pid in &shims {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        if !wait_pids_gone(&shims, Duration::from_secs(5)) {
            problems.push(format!("shims {shims:?} survived SIGKILL"));
        }
        let known_shims: Vec<i32> = known_shims.into_iter().collect();
        reap_our_zombies(&known_shims);

        // 4. processes still in our containers' cgroups (their shim died), by pid
        let cgroup_roots = self.cgroup_dirs(&containers);
        let mut victims = BTreeSet::new();
        for dir in &cgroup_roots {
            victims.extend(crate::cgroup_pids(dir));
        }
        let victims: Vec<i32> = victims.into_iter().collect();
        for pid in &victims {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        if !wait_pids_gone(&victims, Duration::from_secs(5)) {
            problems.push(format!("container processes {victims:?} survived SIGKILL"));
        }
        reap_our_zombies(&victims);

        // 5. mounts under our directory, deepest first, lazily
        for m in mounts_under(&self.dir).into_iter().rev() {
            if let Err(e) = umount2(m.as_str(), MntFlags::MNT_DETACH) {
                problems.push(format!("umount -l {m}: {e}"));
            }
        }

        // 6. shim sockets in /run/containerd/s, and that dir if we made it and are the last
        for s in &sockets {
            if s.exists() {
                let _ = fs::remove_file(s);
            }
        }
        {
            let _guard = SHARED_DIR_LOCK
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // decrement under the lock, so that of two concurrent teardowns one sees itself last
            let last = LIVE.fetch_sub(1, Ordering::SeqCst) <= 1;
            if last && RUN_CONTAINERD_PREEXISTED.get() == Some(&false) {
                // rmdir only succeeds on empty directories: a shim of anyone else keeps them
                let _ = fs::remove_dir(SHIM_SOCKET_DIR);
                let _ = fs::remove_dir("/run/containerd");
            }
        }

        // 7. cgroups
        for dir in &cgroup_roots {
            if let Err(e) = remove_cgroup_tree(dir, Duration::from_secs(5)) {
                problems.push(e.0);
            }
        }

        // 8. the directory (only if nothing is mounted in it any more)
        let still = mounts_under(&self.dir);
        if still.is_empty() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                if self.dir.exists() {
                    problems.push(format!("rm -rf {}: {e}", self.dir.display()));
                }
            }
        } else {
            problems.push(format!(
                "not removing {}: still mounted: {still:?}",
                self.dir.display()
            ));
        }

        let fp = Footprint {
            dir: self.dir.clone(),
            address: self.address.clone(),
            namespace: self.namespace.clone(),
            cgroup_dirs: cgroup_roots,
            shim_sockets: sockets.into_iter().collect(),
            problems,
        };
        self.footprint = Some(fp.clone());
        fp
    }

    /// The cgroup directories teardown removes: `/<ns>` of our own namespace under every
    /// hierarchy, and `/<ns>/<id>` for containers seen in other namespaces.
    fn cgroup_dirs(&self, containers: &BTreeSet<(String, String)>) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for mnt in cgroup_mounts() {
            if self.own_namespace && safe_name(&self.namespace) {
                dirs.push(mnt.join(&self.namespace));
            }
            for (ns, id) in containers {
                if self.own_namespace && *ns == self.namespace {
                    continue;
                }
                if safe_name(ns) && safe_name(id) {
                    dirs.push(mnt.join(ns).join(id));
                }
            }
        }
        dirs
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.footprint.is_some() {
            return;
        }
        if thread::panicking() {
            eprintln!(
                "--- private containerd {} (namespace {}): last lines of its log ---\n{}\n---",
                self.dir.display(),
                self.namespace,
                self.log_tail(40)
            );
        }
        let fp = self.teardown();
        if !fp.problems.is_empty() {
            eprintln!(
                "paddock-tests: containerd teardown problems: {:?}",
                fp.problems
            );
        }
    }
}

/// What a stopped [`Containerd`] had, to check that nothing of it is left.
#[derive(Debug, Clone)]
pub struct Footprint {
    /// Its temp directory.
    pub dir: PathBuf,
    /// Its grpc socket.
    pub address: PathBuf,
    /// Its namespace.
    pub namespace: String,
    /// Cgroup directories that belonged to it.
    pub cgroup_dirs: Vec<PathBuf>,
    /// Shim sockets it knew of.
    pub shim_sockets: Vec<PathBuf>,
    /// Teardown steps that failed.
    pub problems: Vec<String>,
}

impl Footprint {
    /// Everything still there: the directory, mounts under it, processes mentioning it,
    /// cgroups of its namespace, shim sockets, failed teardown steps. Empty = nothing leaked.
    pub fn leaks(&self) -> Vec<String> {
        let mut found: Vec<String> = self
            .problems
            .iter()
            .map(|p| format!("teardown: {p}"))
            .collect();
        if self.dir.exists() {
            found.push(format!("directory {} remains", self.dir.display()));
        }
        for m in mounts_under(&self.dir) {
            found.push(format!("mount {m} remains"));
        }
        for (pid, cmd) in processes_mentioning(&self.dir.to_string_lossy()) {
            found.push(format!("process {pid} remains: {cmd}"));
        }
        let mut cgs: BTreeSet<PathBuf> = self.cgroup_dirs.iter().cloned().collect();
        if safe_name(&self.namespace) {
            for mnt in cgroup_mounts() {
                cgs.insert(mnt.join(&self.namespace));
            }
        }
        for cg in cgs {
            if cg.exists() {
                found.push(format!("cgroup {} remains", cg.display()));
            }
        }
        for s in &self.shim_sockets {
            if s.exists() {
                found.push(format!("shim socket {} remains", s.display()));
            }
        }
        let paddock_state = Path::new(PADDOCK_SHIM_STATE).join(&self.namespace);
        if safe_name(&self.namespace) && paddock_state.exists() {
            found.push(format!(
                "paddock state {} remains: {:?}",
                paddock_state.display(),
                read_dir_names(&paddock_state)
            ));
        }
        found
    }
}

// ---------------------------------------------------------------------------------------------
// ctr events

/// `ctr events` of a private containerd, read on a thread of its own; killed on drop.
#[derive(Debug)]
pub struct Events {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Events {
    /// Starts `ctr events` and returns once it is subscribed: it has printed the
    /// `/namespaces/update` event of a label this sets on the containerd's namespace (which
    /// must exist, e.g. after [`Containerd::import_busybox`]).
    pub fn watch(ctd: &Containerd) -> Result<Self> {
        static MARK: AtomicUsize = AtomicUsize::new(0);
        let mut cmd = ctd.ctr_command(&["events"]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| err(format!("cannot run ctr events: {e}")))?;
        let Some(out) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err("ctr events: no stdout pipe"));
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(l);
            }
        });
        let me = Events { child, lines };
        let mark = format!(
            "paddock-test.events={}-{}",
            std::process::id(),
            MARK.fetch_add(1, Ordering::SeqCst)
        );
        let deadline = Instant::now() + crate::scaled(Duration::from_secs(10));
        loop {
            let out = ctd.ctr(&["namespaces", "label", ctd.namespace(), &mark]);
            if !out.status.success() {
                return Err(err(format!(
                    "ctr namespaces label {} {mark}: {}",
                    ctd.namespace(),
                    describe(&out)
                )));
            }
            let seen = Instant::now() + Duration::from_millis(200);
            while Instant::now() < seen {
                if me.lines().iter().any(|l| l.contains("/namespaces/update")) {
                    return Ok(me);
                }
                thread::sleep(Duration::from_millis(10));
            }
            if Instant::now() >= deadline {
                return Err(err("ctr events printed no event within 10 s (time-scaled)"));
            }
        }
    }

    /// Every line `ctr events` printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Task topics of container `id`, in the order containerd published them.
    pub fn topics(&self, id: &str) -> Vec<String> {
        let container = format!("\"container_id\":\"{id}\"");
        let task = format!("\"id\":\"{id}\"");
        self.lines()
            .iter()
            .filter(|l| l.contains(&container) || l.contains(&task))
            // `<date> <time> <zone> <zone name> <namespace> <topic> <event>`
            .filter_map(|l| l.split_whitespace().nth(5).map(str::to_string))
            .filter(|t| t.starts_with("/tasks/"))
            .collect()
    }

    /// Polls [`Events::topics`] until `topic` shows up or `timeout` (time-scaled) passes;
    /// returns the topics.
    pub fn wait_for(&self, id: &str, topic: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + crate::scaled(timeout);
        loop {
            let t = self.topics(id);
            if t.iter().any(|x| x == topic) || Instant::now() >= deadline {
                return t;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // our child, by pid
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// the busybox image

static IMAGE_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_image_dir() {
    if let Some(dir) = IMAGE_DIR.get() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// The busybox image archive, built once per process by `tests/fixtures/busybox-image.sh` into
/// `$TMPDIR/paddock-busybox-<pid>/busybox.tar` (removed when the process exits).
pub fn busybox_image_tar() -> Result<PathBuf> {
    static TAR: OnceLock<Result<PathBuf>> = OnceLock::new();
    TAR.get_or_init(build_busybox_image).clone()
}

/// The fixture script.
pub fn busybox_image_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/busybox-image.sh")
}

fn build_busybox_image() -> Result<PathBuf> {
    let tmp = std::env::temp_dir();
    // sweep archives of dead test processes
    for name in read_dir_names(&tmp) {
        if let Some(pid) = name.strip_prefix("paddock-busybox-") {
            if let Ok(pid) = pid.parse::<u32>() {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = fs::remove_dir_all(tmp.join(&name));
                }
            }
        }
    }
    let dir = tmp.join(format!("paddock-busybox-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    if IMAGE_DIR.set(dir.clone()).is_ok() {
        // SAFETY: `remove_image_dir` is a plain `extern "C" fn()` that only reads a static
        // that is never written again after this point; registering it has no other effect.
        let rc = unsafe { libc::atexit(remove_image_dir) };
        if rc != 0 {
            eprintln!(
                "paddock-tests: atexit failed; {} will remain",
                dir.display()
            );
        }
    }
    let tar = dir.join("busybox.tar");
    run_image_script(&tar, BUSYBOX_REF, None)?;
    Ok(tar)
}

/// Runs `tests/fixtures/busybox-image.sh TAR REF [CMD-JSON]`: the busybox image under `reference`,
/// with `cmd` (a JSON array) as its Cmd instead of `["sh"]`.
pub(crate) fn run_image_script(tar: &Path, reference: &str, cmd: Option<&str>) -> Result<()> {
    let script = busybox_image_script();
    let mut command = Command::new("bash");
    command.arg(&script).arg(tar).arg(reference).args(cmd);
    let out = run_with_timeout(&mut command, Duration::from_secs(600));
    if !out.status.success() {
        return Err(err(format!(
            "{} {reference} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// the generic runc-shim exercise

/// Timings of [`exercise_runc_shim`].
#[derive(Debug, Clone, Default)]
pub struct ShimReport {
    /// containerd start until its socket answered.
    pub containerd_start: Duration,
    /// `ctr images import` of the busybox archive (archive built before).
    pub import: Duration,
    /// `ctr run --rm … sh -c 'echo hello; exit 3'`, whole client call.
    pub run_rm: Duration,
    /// `ctr run -d … sleep 1000` until ctr returned.
    pub run_detached: Duration,
    /// `ctr task kill -s SIGKILL` until `ctr task ls` said STOPPED.
    pub kill_to_stopped: Duration,
    /// `ctr task delete` + `ctr container rm`.
    pub delete: Duration,
    /// [`Containerd::stop`].
    pub teardown: Duration,
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "{}; stdout: {:?}; stderr: {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn check(ctd: &Containerd, ok: bool, what: &str, out: &Output) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(err(format!(
            "{what}: {}\ncontainerd log tail:\n{}",
            describe(out),
            ctd.log_tail(30)
        )))
    }
}

/// The state and pid of task `id` from `ctr task ls`.
pub fn task_status(ctd: &Containerd, id: &str) -> Option<(u32, String)> {
    let out = ctd.ctr(&["tasks", "ls"]);
    stdout_of(&out).lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.as_slice() {
            [tid, pid, status, ..] if *tid == id => {
                Some((pid.parse().unwrap_or(0), (*status).to_string()))
            }
            _ => None,
        }
    })
}

/// Polls `ctr task ls` until task `id` is STOPPED.
pub fn wait_task_stopped(ctd: &Containerd, id: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + crate::scaled(timeout);
    loop {
        match task_status(ctd, id) {
            Some((_, s)) if s == "STOPPED" => return Ok(()),
            other => {
                if Instant::now() >= deadline {
                    return Err(err(format!(
                        "task {id} not STOPPED after {timeout:?} (ctr task ls: {other:?})"
                    )));
                }
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `ctr run --rm` of `sh -c 'read x; echo got-$x; cat; echo stdin-eof'` with ctr's stdin a
/// pipe: once the task runs, writes `ping` and closes it. Checks the output (stdin data and EOF
/// reached the task) and exit code 0.
pub fn stdin_roundtrip(ctd: &Containerd, image: &str, id: &str) -> Result<()> {
    let mut cmd = ctd.ctr_run_command(&[
        "--rm",
        image,
        id,
        "sh",
        "-c",
        "read x; echo got-$x; cat; echo stdin-eof",
    ]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| err(format!("cannot run {cmd:?}: {e}")))?;
    let stdin = child.stdin.take();
    let deadline = Instant::now() + crate::scaled(Duration::from_secs(10));
    let mut running = false;
    while Instant::now() < deadline {
        if matches!(task_status(ctd, id), Some((_, s)) if s == "RUNNING") {
            running = true;
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    if let Some(mut stdin) = stdin {
        use std::io::Write;
        // may fail if ctr died already; the output check below reports it
        let _ = stdin.write_all(b"ping\n");
    }
    let out = wait_with_timeout(child, Duration::from_secs(20), "ctr run (stdin)");
    check(
        ctd,
        running && out.status.success() && stdout_of(&out).contains("got-ping\nstdin-eof"),
        "ctr run --rm sh -c 'read x; echo got-$x; cat; echo stdin-eof' with `ping` on stdin \
         (want got-ping, stdin-eof, exit 0)",
        &out,
    )
}

/// Drives containerd's runc shim (`io.containerd.runc.v2`) with `binary` as its `BinaryName`
/// through a private containerd: `ctr run --rm` with output and exit code 3, stdin data + EOF
/// ([`stdin_roundtrip`]), `--null-io` (stdio on /dev/null must be writable), `ctr run -d`,
/// `task kill -s SIGKILL`, `task delete`, `container rm`; then checks that no mount, shim, runc
/// state, shim socket, cgroup, process or directory is left, during and after teardown.
pub fn exercise_runc_shim(binary: &Path) -> Result<ShimReport> {
    let mut report = ShimReport::default();
    let ctd = Containerd::start(ContainerdConfig {
        runc_binary: Some(binary.to_path_buf()),
        ..ContainerdConfig::default()
    })?;
    report.containerd_start = ctd.start_time();
    busybox_image_tar()?;
    let t = Instant::now();
    let image = ctd.import_busybox()?;
    report.import = t.elapsed();
    let ns = ctd.namespace().to_string();

    // 1. foreground run: output and exit code
    let t = Instant::now();
    let out = ctd.ctr_run(&["--rm", &image, "hello", "sh", "-c", "echo hello; exit 3"]);
    report.run_rm = t.elapsed();
    check(
        &ctd,
        out.status.code() == Some(3) && stdout_of(&out).contains("hello"),
        "ctr run --rm sh -c 'echo hello; exit 3' (want stdout hello, exit 3)",
        &out,
    )?;

    // 2. stdin: data and EOF must reach the task. (ctr only forwards EOF once the task
    //    exists: an immediately-empty stdin such as /dev/null is never closed, so feed the
    //    pipe after the task runs.)
    stdin_roundtrip(&ctd, &image, "stdin")?;

    // 3. --null-io: the shim gives the runtime /dev/null (stdin O_RDONLY, stdout/err
    //    O_WRONLY); writes to stdout/stderr must succeed inside the container
    let out = ctd.ctr_run(&[
        "--rm",
        "--null-io",
        &image,
        "null-io",
        "sh",
        "-c",
        "echo out || exit 7; echo err >&2 || exit 8; exit 0",
    ]);
    check(
        &ctd,
        out.status.success(),
        "ctr run --rm --null-io (exit 7/8 = write to stdout/stderr failed)",
        &out,
    )?;

    // 4. detached task, killed, deleted
    let id = "sleeper";
    let t = Instant::now();
    let out = ctd.ctr_run(&["-d", &image, id, "sleep", "1000"]);
    report.run_detached = t.elapsed();
    check(&ctd, out.status.success(), "ctr run -d sleep 1000", &out)?;
    let (pid, status) =
        task_status(&ctd, id).ok_or_else(|| err(format!("ctr task ls does not list {id}")))?;
    if status != "RUNNING" || pid == 0 {
        return Err(err(format!(
            "task {id}: pid {pid} status {status}, want RUNNING"
        )));
    }
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let want = format!("/{ns}/{id}");
    if !cgroup.lines().any(|l| l.ends_with(&want)) {
        return Err(err(format!(
            "task {id} (pid {pid}) is not in cgroup {want}: {cgroup}"
        )));
    }
    // `sleep` is pid 1 of its pid namespace: SIGTERM (ctr's default) is ignored, so SIGKILL
    let t = Instant::now();
    let out = ctd.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
    check(&ctd, out.status.success(), "ctr task kill -s SIGKILL", &out)?;
    wait_task_stopped(&ctd, id, Duration::from_secs(10))?;
    report.kill_to_stopped = t.elapsed();
    let t = Instant::now();
    let out = ctd.ctr(&["tasks", "delete", id]);
    check(&ctd, out.status.success(), "ctr task delete", &out)?;
    let out = ctd.ctr(&["containers", "rm", id]);
    check(&ctd, out.status.success(), "ctr container rm", &out)?;
    report.delete = t.elapsed();

    // 5. nothing of the four containers may remain while containerd still runs
    let left = ctd.wait_containers_gone(&["hello", "stdin", "null-io", id], Duration::from_secs(5));
    if !left.is_empty() {
        return Err(err(format!(
            "leftovers after deleting containers: {left:#?}"
        )));
    }
    let out = ctd.ctr(&["containers", "ls", "-q"]);
    if !stdout_of(&out).trim().is_empty() {
        return Err(err(format!("containers still listed: {}", stdout_of(&out))));
    }

    // 6. teardown leaves nothing
    let t = Instant::now();
    let fp = ctd.stop();
    report.teardown = t.elapsed();
    let leaks = fp.leaks();
    if !leaks.is_empty() {
        return Err(err(format!("leaks after containerd teardown: {leaks:#?}")));
    }
    Ok(report)
}

/// More of the runc CLI through the shim: `ctr task exec` (output, exit code), `ctr task ps`,
/// `ctr task pause`/`resume`, `ctr task metrics`, then kill/delete, a second container left
/// running for the teardown to remove, and the leak checks.
pub fn exercise_runc_shim_extras(binary: &Path) -> Result<()> {
    let ctd = Containerd::start(ContainerdConfig {
        runc_binary: Some(binary.to_path_buf()),
        ..ContainerdConfig::default()
    })?;
    let image = ctd.import_busybox()?;
    let id = "extras";
    let out = ctd.ctr_run(&["-d", &image, id, "sleep", "1000"]);
    check(&ctd, out.status.success(), "ctr run -d sleep 1000", &out)?;
    let out = ctd.ctr_exec(&[], id, "e1", &["sh", "-c", "echo exec-ok; exit 4"]);
    check(
        &ctd,
        out.status.code() == Some(4) && stdout_of(&out).contains("exec-ok"),
        "ctr task exec sh -c 'echo exec-ok; exit 4'",
        &out,
    )?;
    let out = ctd.ctr(&["tasks", "ps", id]);
    check(
        &ctd,
        out.status.success() && stdout_of(&out).lines().count() >= 2,
        "ctr task ps",
        &out,
    )?;
    let out = ctd.ctr(&["tasks", "pause", id]);
    check(&ctd, out.status.success(), "ctr task pause", &out)?;
    match task_status(&ctd, id) {
        Some((_, s)) if s == "PAUSED" => {}
        other => return Err(err(format!("after pause, task {id} is {other:?}"))),
    }
    let out = ctd.ctr(&["tasks", "resume", id]);
    check(&ctd, out.status.success(), "ctr task resume", &out)?;
    let out = ctd.ctr(&["tasks", "metrics", id]);
    check(&ctd, out.status.success(), "ctr task metrics", &out)?;
    let out = ctd.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
    check(&ctd, out.status.success(), "ctr task kill -s SIGKILL", &out)?;
    wait_task_stopped(&ctd, id, Duration::from_secs(10))?;
    let out = ctd.ctr(&["tasks", "delete", id]);
    check(&ctd, out.status.success(), "ctr task delete", &out)?;
    let out = ctd.ctr(&["containers", "rm", id]);
    check(&ctd, out.status.success(), "ctr container rm", &out)?;
    let left = ctd.wait_containers_gone(&[id], Duration::from_secs(5));
    if !left.is_empty() {
        return Err(err(format!(
            "leftovers after deleting containers: {left:#?}"
        )));
    }
    // a container still running at teardown: stop() must kill and remove it (ctr task rm -f,
    // ctr container rm) and leave nothing
    let out = ctd.ctr_run(&["-d", &image, "left-running", "sleep", "1000"]);
    check(
        &ctd,
        out.status.success(),
        "ctr run -d (left running)",
        &out,
    )?;
    let leaks = ctd.stop().leaks();
    if !leaks.is_empty() {
        return Err(err(format!("leaks after containerd teardown: {leaks:#?}")));
    }
    Ok(())
}

/// Writes `<dir>/runc-logger`, a `/bin/sh` wrapper that appends one line per call to
/// `<dir>/runc-argv.log` (time, argv as `[arg]`s, where fds 0/1/2 point) and execs `target`.
/// Returns (wrapper, log). Point [`ContainerdConfig::runc_binary`] at the wrapper.
pub fn logging_wrapper(dir: &Path, target: &Path) -> Result<(PathBuf, PathBuf)> {
    let wrapper = dir.join("runc-logger");
    let log = dir.join("runc-argv.log");
    let script = format!(
        r#"#!/bin/sh
fds=""
for f in 0 1 2; do fds="$fds $f=$(readlink /proc/$$/fd/$f 2>/dev/null || echo closed)"; done
{{
  printf '%s' "$(date +%s.%N)"
  for a in "$@"; do printf ' [%s]' "$a"; done
  printf ' | fds:%s\n' "$fds"
}} >> {log}
exec {target} "$@"
"#,
        log = sh_quote(&log.to_string_lossy()),
        target = sh_quote(&target.to_string_lossy()),
    );
    fs::write(&wrapper, script)
        .map_err(|e| err(format!("cannot write {}: {e}", wrapper.display())))?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))
        .map_err(|e| err(format!("cannot chmod {}: {e}", wrapper.display())))?;
    Ok((wrapper, log))
}

// ---------------------------------------------------------------------------------------------
// helpers

/// Runs a command with stdin on /dev/null, capturing stdout and stderr, killing it (by its pid,
/// it is our child) after `timeout`. Exit code 127 if it cannot be spawned, 124 on timeout.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match cmd.spawn() {
        Ok(child) => wait_with_timeout(child, timeout, &format!("{cmd:?}")),
        Err(e) => Output {
            status: ExitStatus::from_raw(127 << 8),
            stdout: Vec::new(),
            stderr: format!("[harness] cannot run {cmd:?}: {e}").into_bytes(),
        },
    }
}

/// Collects a spawned child's piped stdout/stderr and status, killing it after `timeout`
/// (then exit code 124, `what` and the reason appended to stderr). Exit code 125 if the status
/// was collected by another `waitpid(-1)` of this process (e.g. a subreaper's reaper).
pub fn wait_with_timeout(mut child: Child, timeout: Duration, what: &str) -> Output {
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        pipe.map(|mut p| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = p.read_to_end(&mut buf);
                buf
            })
        })
    };
    let out_t = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_t = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + crate::scaled(timeout);
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => {
                thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Err(e) => {
                // ECHILD: another waitpid(-1) in this process took the status; the pid is gone
                let stdout = out_t.and_then(|t| t.join().ok()).unwrap_or_default();
                let mut stderr = err_t.and_then(|t| t.join().ok()).unwrap_or_default();
                stderr.extend_from_slice(
                    format!("\n[harness] exit status of {what} lost ({e}): reaped elsewhere")
                        .as_bytes(),
                );
                return Output {
                    status: ExitStatus::from_raw(125 << 8),
                    stdout,
                    stderr,
                };
            }
        }
    };
    let stdout = out_t.and_then(|t| t.join().ok()).unwrap_or_default();
    let mut stderr = err_t.and_then(|t| t.join().ok()).unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => {
            stderr.extend_from_slice(
                format!("\n[harness] {what} timed out after {timeout:?}; killed").as_bytes(),
            );
            Output {
                status: ExitStatus::from_raw(124 << 8),
                stdout,
                stderr,
            }
        }
    }
}

/// SIGTERM, `grace`, SIGKILL; by pid, our child. An `Err` from `try_wait` means somebody
/// else's `waitpid(-1)` (a subreaper test's reaper) collected it: it is gone, do not signal the pid.
fn stop_child(child: &mut Child, grace: Duration) -> Result<()> {
    let Ok(pid) = i32::try_from(child.id()) else {
        return Err(err("containerd pid out of range"));
    };
    match child.try_wait() {
        Ok(Some(_)) | Err(_) => return Ok(()),
        Ok(None) => {}
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let grace = crate::scaled(grace);
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return Ok(()),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => break,
        }
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = child.wait();
    Err(err(format!(
        "containerd {pid} ignored SIGTERM for {grace:?}; killed"
    )))
}

/// Reaps `pids` that are zombie children of this process (shims and container processes
/// reparent to us when the test process is a child subreaper). Only these pids, never -1.
fn reap_our_zombies(pids: &[i32]) {
    let me = std::process::id();
    for pid in pids {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z")
            && fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(me)
        {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(*pid), None);
        }
    }
}

pub(crate) fn toml_str(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn gone_msg(out: &Output) -> bool {
    String::from_utf8_lossy(&out.stderr).contains("not found")
}

/// A containerd namespace or container id usable as one path component.
fn safe_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn sha256_hex(data: &[u8]) -> Option<String> {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(data).ok()?;
    }
    let out = child.wait_with_output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let hex = s.split_whitespace().next()?;
    (hex.len() == 64).then(|| hex.to_string())
}

/// Undo the octal escapes of /proc/self/mountinfo (`\040` for space and so on).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (mount point, fstype) of every mount of this process, in mountinfo order.
fn mounts() -> Vec<(String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mnt = pre.split(' ').nth(4)?;
            let fstype = post.split(' ').next()?;
            Some((unescape_mount(mnt), fstype.to_string()))
        })
        .collect()
}

/// Mount points at or under `dir`, in mountinfo order (parents first).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    mounts()
        .into_iter()
        .map(|(m, _)| m)
        .filter(|m| Path::new(m).starts_with(dir))
        .collect()
}

/// Mount points of the cgroup hierarchies (v1 controllers and cgroup2).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    mounts()
        .into_iter()
        .filter(|(_, t)| t == "cgroup" || t == "cgroup2")
        .map(|(m, _)| PathBuf::from(m))
        .filter(|m| seen.insert(m.clone()))
        .collect()
}

fn cmdline_args(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn cmdline_string(pid: i32) -> String {
    cmdline_args(pid).join(" ")
}

fn all_pids() -> Vec<i32> {
    let me = i32::try_from(std::process::id()).unwrap_or(-1);
    read_dir_names(Path::new("/proc"))
        .into_iter()
        .filter_map(|n| n.parse::<i32>().ok())
        .filter(|p| *p != me)
        .collect()
}

/// Live processes with an argument containing `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    all_pids()
        .into_iter()
        .filter_map(|pid| {
            let args = cmdline_args(pid);
            args.iter()
                .any(|a| a.contains(needle))
                .then(|| (pid, args.join(" ")))
        })
        .collect()
}

/// Shims started by the containerd at `address`: `-address <address>` on their command line.
pub fn shim_pids(address: &Path) -> Vec<i32> {
    let addr = address.to_string_lossy();
    all_pids()
        .into_iter()
        .filter(|pid| {
            let args = cmdline_args(*pid);
            args.windows(2)
                .any(|w| w[0] == "-address" && w[1] == addr.as_ref())
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // the state follows the ")" closing the command name; Z = zombie, X = dead
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next()),
            Some('Z') | Some('X') | None
        ),
        Err(_) => false,
    }
}

fn wait_pids_gone(pids: &[i32], timeout: Duration) -> bool {
    let deadline = Instant::now() + crate::scaled(timeout);
    loop {
        if !pids.iter().any(|p| alive(*p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn remove_cgroup_tree(dir: &Path, timeout: Duration) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path(), timeout)?;
            }
        }
    }
    let deadline = Instant::now() + crate::scaled(timeout);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(err(format!("rmdir {}: {e}", dir.display())))
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape_mount(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount(r"/a\011"), "/a\t");
        assert_eq!(unescape_mount("/plain"), "/plain");
        assert_eq!(unescape_mount(r"/x\"), r"/x\");
    }

    #[test]
    fn quotes() {
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn names() {
        assert!(safe_name("paddock-test-1-0"));
        assert!(!safe_name(".."));
        assert!(!safe_name("a/b"));
        assert!(!safe_name(""));
    }
}
