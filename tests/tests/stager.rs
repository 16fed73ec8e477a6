//! `paddock-stager` end to end: a private containerd started by the test, real CNI plugins
//! (bridge, host-local, portmap) on a bridge of the test's own, the sample app of `examples/`,
//! instances run through paddock's own shim (runtime `io.containerd.paddock.v2`). Every test checks
//! that nothing is left: containers, snapshots' mounts, network namespaces, the bridge,
//! iptables rules, cgroups, processes and the stager's state directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paddock_tests::containerd::{ensure_packages, Containerd, ContainerdConfig};
use paddock_tests::{build_dir, eventually, net, require_root, snapshot, workspace, HostSnapshot};
use serde_json::Value;

fn stager_bin() -> PathBuf {
    let p = build_dir().join("paddock-stager");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build` first",
        p.display()
    );
    p
}

/// Everything a test's stager touches on the host, to compare before and after.
#[derive(Debug, PartialEq, Eq)]
struct NetSnapshot {
    links: BTreeSet<String>,
    nat: Vec<String>,
    filter: Vec<String>,
    ip_forward: String,
}

fn net_snapshot() -> NetSnapshot {
    let lines = |cmd: &mut Command| -> Vec<String> {
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let links = lines(Command::new("ip").args(["-o", "link", "show"]))
        .iter()
        .filter_map(|l| {
            l.split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        })
        .collect();
    NetSnapshot {
        links,
        nat: lines(Command::new("iptables").args(["-w", "-t", "nat", "-S"])),
        filter: lines(Command::new("iptables").args(["-w", "-t", "filter", "-S"])),
        ip_forward: fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default(),
    }
}

/// Stops the apps a test started if it ends early (a failed assertion), before its containerd
/// goes: the instances' network (bridge, iptables rules, network namespaces) is the stager's to
/// remove, not containerd's.
/// Then checks that the host has no instance networking left that was not there before the
/// test (CNI nat rules, paddock bridges and their veths, netns bind mounts): a leak fails the
/// test even when it ended early.
struct Cleanup {
    stop: Mutex<Vec<Command>>,
    /// Run after `stop`, as they are.
    then: Mutex<Vec<fn()>>,
    net_before: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let cmds = std::mem::take(&mut *self.stop.lock().unwrap_or_else(|p| p.into_inner()));
        for mut cmd in cmds {
            let _ = cmd.output();
        }
        for f in std::mem::take(&mut *self.then.lock().unwrap_or_else(|p| p.into_inner())) {
            f();
        }
        let mut left = Vec::new();
        let clean = eventually(Duration::from_secs(5), || {
            left = net::new_leftovers(&self.net_before, &net::leftovers());
            left.is_empty()
        });
        if !clean {
            if std::thread::panicking() {
                eprintln!("instance networking left behind: {left:#?}");
            } else {
                panic!("instance networking left behind: {left:#?}");
            }
        }
    }
}

struct Stager {
    // dropped first: stops what is still running while containerd still answers
    cleanup: Cleanup,
    ctd: Containerd,
    tmp: tempfile::TempDir,
    bridge: String,
    subnet: String,
    net_before: NetSnapshot,
    host_before: HostSnapshot,
}

impl Stager {
    fn start() -> Option<Self> {
        if !require_root() {
            return None;
        }
        ensure_packages(&[
            "containerd",
            "containernetworking-plugins",
            "iptables",
            "busybox-static",
        ])
        .unwrap();
        let net_before = net_snapshot();
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("state")).unwrap();
        let host_before = snapshot(&tmp.path().join("state"), "paddock");
        let ctd = Containerd::start(ContainerdConfig::paddock_shim(&build_dir())).unwrap();
        let n = std::process::id() % 200 + 20;
        Some(Stager {
            cleanup: Cleanup {
                stop: Mutex::new(Vec::new()),
                then: Mutex::new(Vec::new()),
                net_before: net::leftovers(),
            },
            ctd,
            bridge: format!("pdst{}", std::process::id() % 100_000),
            subnet: format!("10.89.{n}.0/24"),
            tmp,
            net_before,
            host_before,
        })
    }

    fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(stager_bin());
        cmd.arg("--address")
            .arg(self.ctd.address())
            .arg("--namespace")
            .arg(self.ctd.namespace())
            .arg("--data-dir")
            .arg(self.data())
            .arg("--state-dir")
            .arg(self.state())
            .arg("--runtime")
            .arg("io.containerd.paddock.v2")
            .arg("--bridge")
            .arg(&self.bridge)
            .arg("--subnet")
            .arg(&self.subnet)
            .args(args)
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        eprintln!(
            "$ paddock-stager {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        if args.first() == Some(&"run") {
            if let Some(i) = args.iter().position(|a| *a == "--name") {
                self.started(args[i + 1]);
            }
        }
        let out = self.run(args);
        assert!(
            out.status.success(),
            "paddock-stager {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stages `dir`; returns the droplet id (the last line).
    fn stage(&self, dir: &Path, extra: &[&str]) -> String {
        let mut args = vec!["stage", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        let id = out.lines().last().unwrap().trim().to_string();
        assert_eq!(id.len(), 64, "droplet id: {id}");
        id
    }

    /// `run DROPLET --name APP --instances N --memory M --disk D`, which must succeed.
    /// Remembers to stop `app` should the test end early.
    fn started(&self, app: &str) {
        self.cleanup
            .stop
            .lock()
            .unwrap()
            .push(self.command(&["stop", app, "--grace", "0"]));
    }

    fn run_app(&self, droplet: &str, app: &str, n: u32, memory: &str, disk: &str) -> String {
        let n = n.to_string();
        self.ok(&[
            "run",
            droplet,
            "--name",
            app,
            "--instances",
            &n,
            "--memory",
            memory,
            "--disk",
            disk,
        ])
    }

    fn ps(&self, app: &str) -> Vec<Value> {
        let out = self
            .command(&["ps", app, "--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ps: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Every instance of `rows` runs through the paddock shim (runtime
    /// `io.containerd.paddock.v2`, its shim processes started by our containerd, the sandbox's
    /// state in the shim's root) and its init sits in the network namespace the stager made
    /// for it (the nsfs file under `<state>/netns`).
    fn assert_paddock_shim(&self, rows: &[Value]) {
        use std::os::unix::fs::MetadataExt;
        for r in rows {
            let id = r["id"].as_str().unwrap();
            let info = self.ctd.ctr(&["containers", "info", id]);
            let info: Value = serde_json::from_slice(&info.stdout)
                .unwrap_or_else(|e| panic!("ctr containers info {id}: {e}"));
            assert_eq!(
                info["Runtime"]["Name"], "io.containerd.paddock.v2",
                "{info}"
            );
            let state = Path::new("/run/paddock/containerd")
                .join(self.ctd.namespace())
                .join(id);
            assert!(state.exists(), "no paddock state {}", state.display());
            let (pid, status) = paddock_tests::containerd::task_status(&self.ctd, id).unwrap();
            assert_eq!(status, "RUNNING");
            let joined = fs::metadata(format!("/proc/{pid}/ns/net")).unwrap().ino();
            let made = fs::metadata(self.state().join("netns").join(id))
                .unwrap()
                .ino();
            assert_eq!(
                joined, made,
                "{id} (pid {pid}) is not in its network namespace"
            );
        }
        let shims: Vec<String> = self
            .ctd
            .shim_pids()
            .iter()
            .map(|p| {
                fs::read_link(format!("/proc/{p}/exe"))
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert!(!shims.is_empty(), "no shim serves the instances");
        for exe in &shims {
            assert!(exe.ends_with("/containerd-shim-paddock-v2"), "shim {exe}");
        }
    }

    /// Stops the app and checks that nothing of it or of the stager is left on the host.
    fn finish(self, app: &str) {
        self.ok(&["stop", app, "--grace", "2"]);
        self.finish_clean();
    }

    /// Everything the stager and its apps made is gone: containers, active snapshots, stager
    /// processes (watchers), sandbox state and cgroups, logs, containerd's own leftovers and
    /// host network state.
    fn finish_clean(self) {
        self.cleanup.stop.lock().unwrap().clear();
        let left = self.ctd.ctr(&["containers", "ls", "-q"]);
        assert_eq!(
            String::from_utf8_lossy(&left.stdout).trim(),
            "",
            "containers left"
        );
        let snaps = self.ctd.ctr(&["snapshots", "ls"]);
        let active: Vec<String> = String::from_utf8_lossy(&snaps.stdout)
            .lines()
            .filter(|l| l.contains("Active"))
            .map(str::to_string)
            .collect();
        assert!(active.is_empty(), "active snapshots left: {active:?}");
        assert!(
            eventually(Duration::from_secs(5), || {
                paddock_tests::containerd::processes_mentioning("paddock-stager").is_empty()
            }),
            "stager processes left: {:?}",
            paddock_tests::containerd::processes_mentioning("paddock-stager")
        );
        // The state dir was empty when the snapshot was taken: this covers it too.
        paddock_tests::assert_no_leak(&self.host_before, &self.state(), "paddock");
        let logs = self.data().join("logs").join(self.ctd.namespace());
        assert!(!logs.exists(), "logs left in {}", logs.display());
        let Stager {
            ctd,
            net_before,
            tmp,
            ..
        } = self;
        let fp = ctd.stop();
        assert!(fp.leaks().is_empty(), "containerd leaks: {:?}", fp.leaks());
        assert_eq!(net_snapshot(), net_before, "host network changed");
        drop(tmp);
    }
}

/// `GET /` on 127.0.0.1:port; the body on a 200.
fn get(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
    if !buf.starts_with("HTTP/1.0 200") && !buf.starts_with("HTTP/1.1 200") {
        return Err(format!("not a 200: {buf:?}"));
    }
    Ok(buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// The CFS quota (µs per period) of an instance's cgroup, `None` when it has none (v1
/// `cpu.cfs_quota_us` = -1, v2 `cpu.max` = "max …"). Panics if the cgroup is not found.
fn cpu_quota_us(app: &str, id: &str) -> Option<u64> {
    let v1 = format!("/sys/fs/cgroup/cpu/paddock/{app}/{id}/cpu.cfs_quota_us");
    let v2 = format!("/sys/fs/cgroup/paddock/{app}/{id}/cpu.max");
    let text = fs::read_to_string(&v1)
        .or_else(|_| fs::read_to_string(&v2))
        .unwrap_or_else(|e| panic!("no CPU cgroup for {id} ({v1}, {v2}): {e}"));
    text.split_whitespace()
        .next()?
        .parse::<i64>()
        .ok()
        .and_then(|q| u64::try_from(q).ok())
}

fn sample_app() -> PathBuf {
    workspace().join("examples/hello")
}

fn ports(rows: &[Value]) -> Vec<u16> {
    rows.iter()
        .map(|r| r["host_port"].as_u64().unwrap() as u16)
        .collect()
}

#[test]
fn stage_run_curl_stop() {
    let Some(st) = Stager::start() else { return };
    let droplet = st.stage(&sample_app(), &[]);
    // staging again gives the same droplet: content-addressed
    assert_eq!(st.stage(&sample_app(), &[]), droplet);
    let manifest: Value = serde_json::from_slice(
        &fs::read(
            st.data()
                .join("droplets")
                .join(&droplet)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["start_command"], "./app.sh");
    assert_eq!(manifest["detected_by"], "Procfile");
    let out = st.ok(&[
        "run",
        &droplet[..12],
        "--name",
        "hello",
        "--instances",
        "2",
        "--memory",
        "64M",
        "--disk",
        "32M",
    ]);
    assert!(out.contains("INDEX"), "{out}");
    let rows = st.ps("hello");
    assert_eq!(rows.len(), 2);
    for (i, r) in rows.iter().enumerate() {
        for key in [
            "index",
            "id",
            "host_port",
            "state",
            "memory_bytes",
            "cpu_ns",
            "disk_bytes",
        ] {
            assert!(r.get(key).is_some(), "ps lacks {key}: {r}");
        }
        assert_eq!(r["index"], i as u64);
        assert_eq!(r["state"], "running", "{r}");
        assert!(r["memory_bytes"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["memory_limit"], 64u64 << 20);
        assert!(r["cpu_ns"].as_u64().unwrap() > 0, "{r}");
        // the quota volume: a few hundred KiB of ext4 metadata, less than its 32M
        let disk = r["disk_bytes"].as_u64().unwrap();
        assert!(disk > 0 && disk < 32 << 20, "{r}");
    }
    let p = ports(&rows);
    assert_ne!(p[0], p[1]);
    st.assert_paddock_shim(&rows);
    // --cpu equal (the default): a weight, no quota
    assert_eq!(cpu_quota_us("hello", rows[0]["id"].as_str().unwrap()), None);
    for (i, port) in p.iter().enumerate() {
        let body = get(*port).unwrap();
        assert!(
            body.contains(&format!("hello from instance {i} of a staged app")),
            "{body}"
        );
    }
    let logs = st.ok(&["logs", "hello", "--index", "1"]);
    assert!(logs.contains("instance 1"), "{logs}");
    assert!(logs.contains("serving on :8080"), "{logs}");
    // the environment an instance gets
    let logs0 = st.ok(&["logs", "hello", "--index", "0"]);
    let guid = rows[0]["guid"].as_str().unwrap();
    assert!(logs0.contains(guid), "INSTANCE_GUID not seen: {logs0}");
    st.finish("hello");
}

#[test]
fn scale_up_and_down() {
    let Some(st) = Stager::start() else { return };
    let droplet = st.stage(&sample_app(), &[]);
    st.ok(&[
        "run", &droplet, "--name", "web", "--memory", "32M", "--disk", "16M", "--cpu", "cap",
    ]);
    st.ok(&["scale", "web", "3"]);
    let rows = st.ps("web");
    // --cpu cap: every instance has a hard CPU quota, re-balanced as instances come and go
    let quotas_of_three: Vec<u64> = rows
        .iter()
        .map(|r| cpu_quota_us("web", r["id"].as_str().unwrap()).expect("a CPU quota"))
        .collect();
    assert_eq!(
        rows.iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    for port in ports(&rows) {
        get(port).unwrap();
    }
    st.ok(&["scale", "web", "1", "--grace", "1"]);
    let after = st.ps("web");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["id"], rows[0]["id"]);
    get(ports(&after)[0]).unwrap();
    let alone = cpu_quota_us("web", after[0]["id"].as_str().unwrap()).expect("a CPU quota");
    assert!(
        alone > quotas_of_three[0],
        "quota of one instance {alone} not above that of three {quotas_of_three:?}"
    );
    for port in &ports(&rows)[1..] {
        assert!(
            get(*port).is_err(),
            "port {port} of a removed instance still answers"
        );
    }
    st.finish("web");
}

#[test]
fn rolling_restart_loses_no_request() {
    let Some(st) = Stager::start() else { return };
    let droplet = st.stage(&sample_app(), &[]);
    st.run_app(&droplet, "roll", 2, "32M", "16M");
    let before = st.ps("roll");
    let st = Arc::new(st);
    // a router: refreshes the routable ports (state running) every 100 ms
    let routes = Arc::new(Mutex::new(ports(&before)));
    let done = Arc::new(AtomicBool::new(false));
    let router = {
        let (st, routes, done) = (st.clone(), routes.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let rows = st.ps("roll");
                let live: Vec<u16> = rows
                    .iter()
                    .filter(|r| r["state"] == "running")
                    .map(|r| r["host_port"].as_u64().unwrap() as u16)
                    .collect();
                *routes.lock().unwrap() = live;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // a bounded request loop on loopback
    let (ok, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let client = {
        let (routes, done, ok, failed) = (routes.clone(), done.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut n = 0usize;
            let began = Instant::now();
            while !done.load(Ordering::SeqCst)
                && n < 20_000
                && began.elapsed() < Duration::from_secs(120)
            {
                let live = routes.lock().unwrap().clone();
                if live.is_empty() {
                    failed
                        .lock()
                        .unwrap()
                        .push("no routable instance".to_string());
                } else {
                    let port = live[n % live.len()];
                    match get(port) {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => failed.lock().unwrap().push(format!("port {port}: {e}")),
                    }
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    st.ok(&[
        "restart",
        "roll",
        "--rolling",
        "--drain-ms",
        "1000",
        "--grace",
        "1",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::SeqCst);
    client.join().unwrap();
    router.join().unwrap();
    let after = st.ps("roll");
    let failed = failed.lock().unwrap().clone();
    let ok = ok.load(Ordering::SeqCst);
    eprintln!(
        "rolling restart: {ok} requests answered, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok > 50, "only {ok} requests ran");
    assert_eq!(after.len(), 2);
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old["index"], new["index"]);
        assert_ne!(
            old["id"], new["id"],
            "instance {} was not replaced",
            old["index"]
        );
        assert_eq!(new["state"], "running");
    }
    let st = Arc::try_unwrap(st).ok().expect("threads are done");
    st.finish("roll");
}

#[test]
fn oom_instance_is_reported() {
    let Some(st) = Stager::start() else { return };
    let app = tempfile::tempdir().unwrap();
    fs::write(app.path().join("index.html"), "x\n").unwrap();
    // serves, then grows a shell string until its 16M limit kills it
    let cmd = "httpd -p $PORT -h /app; sleep 2; x=0123456789; while :; do x=$x$x; done";
    let droplet = st.stage(app.path(), &["--command", cmd]);
    st.ok(&[
        "run", &droplet, "--name", "hog", "--memory", "16M", "--disk", "8M",
    ]);
    let mut last = Vec::new();
    let reported = eventually(Duration::from_secs(60), || {
        last = st.ps("hog");
        let r = &last[0];
        r["oom_kills"].as_u64().unwrap_or(0) >= 1
            && r["last_exit"] == "oom"
            && (r["restarts"].as_u64().unwrap_or(0) >= 1 || r["state"] == "crashed")
    });
    assert!(reported, "no OOM reported: {last:?}");
    // after its restart budget the instance is marked crashed and left down
    let crashed = eventually(Duration::from_secs(90), || {
        last = st.ps("hog");
        last[0]["state"] == "crashed"
    });
    assert!(crashed, "never marked crashed: {last:?}");
    assert_eq!(last[0]["restarts"], 3);
    assert!(last[0]["oom_kills"].as_u64().unwrap() >= 3, "{last:?}");
    let table = st.ok(&["ps", "hog"]);
    assert!(
        table.contains("crashed") && table.contains("oom"),
        "{table}"
    );
    st.finish("hog");
}

#[test]
fn bad_input_is_refused_cleanly() {
    let Some(st) = Stager::start() else { return };
    let fails = |args: &[&str], needle: &str| {
        let out = st.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
        err.into_owned()
    };
    // an app with no start command
    let empty = tempfile::tempdir().unwrap();
    fs::write(empty.path().join("index.html"), "x").unwrap();
    fails(
        &["stage", empty.path().to_str().unwrap()],
        "no start command",
    );
    assert!(!st.data().join("droplets").exists());
    // a mistyped app directory
    let typo = empty.path().join("typo");
    fails(&["stage", typo.to_str().unwrap()], "not an app directory");
    // an unreachable containerd socket
    let out = Command::new(stager_bin())
        .args(["--address", "/nonexistent/containerd.sock", "stage"])
        .arg(sample_app())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("cannot reach containerd at /nonexistent/containerd.sock"),
        "{err}"
    );
    // limits that do not parse, and other bad arguments
    let droplet = st.stage(&sample_app(), &[]);
    fails(
        &["run", &droplet, "--name", "x", "--memory", "12X"],
        "--memory",
    );
    fails(&["run", &droplet, "--name", "x", "--disk=-1"], "--disk");
    fails(&["run", &droplet, "--name", "x", "--cpu", "half"], "--cpu");
    fails(&["run", &droplet, "--name", "Bad/Name"], "app name");
    fails(
        &["run", &droplet, "--name", "x", "--instances", "0"],
        "--instances",
    );
    fails(
        &["run", "feedface", "--name", "x"],
        "droplet feedface not found",
    );
    // a port that never opens: the instance is torn down and the reason shown
    let quiet = tempfile::tempdir().unwrap();
    fs::write(
        quiet.path().join("Procfile"),
        "web: echo starting; sleep 1000\n",
    )
    .unwrap();
    let quiet_droplet = st.stage(quiet.path(), &[]);
    let err = fails(
        &[
            "run",
            &quiet_droplet,
            "--name",
            "quiet",
            "--health-timeout",
            "2",
        ],
        "did not answer within 2s",
    );
    assert!(err.contains("its last output: starting"), "{err}");
    // an app that exits before its port opens
    let exits = tempfile::tempdir().unwrap();
    fs::write(exits.path().join("Procfile"), "web: exit 3\n").unwrap();
    let exits_droplet = st.stage(exits.path(), &[]);
    fails(
        &["run", &exits_droplet, "--name", "exits"],
        "ended (exit 3) before its port opened",
    );
    assert!(st.ps("quiet").is_empty() && st.ps("exits").is_empty());
    // nothing of the failed runs is left
    let left = st.ctd.ctr(&["containers", "ls", "-q"]);
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "");
    // `stop` of an app with no instances is an error, and leaves nothing either
    fails(&["stop", "quiet"], "has no instances");
    st.finish_clean();
}

/// A `portmap` ADD or DEL of `host_port` → `ip:8080` for container `id` on CNI network
/// `network`, as a stager run makes it: what a run killed before its DEL leaves behind.
fn portmap(command: &str, network: &str, id: &str, host_port: u16, ip: &str) -> Command {
    let conf = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": network,
        "type": "portmap",
        "capabilities": {"portMappings": true},
        "snat": true,
        "runtimeConfig": {"portMappings": [
            {"hostPort": host_port, "containerPort": 8080, "protocol": "tcp"}
        ]},
        "prevResult": {
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"version": "4", "address": format!("{ip}/24"), "interface": 0}],
        },
    });
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "printf %s \"$CONF\" | /usr/lib/cni/portmap"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CONF", conf.to_string())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", "/proc/1/ns/net")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni");
    cmd
}

/// The `CNI-HOSTPORT-DNAT` rules naming container `id`.
fn dnat_rules_of(id: &str) -> Vec<String> {
    let out = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("id: \\\"{id}\\\"")))
        .map(str::to_string)
        .collect()
}

/// Host ports the stager could lease, in its order: nothing listens on them, no mapping.
fn free_ports(n: usize) -> Vec<u16> {
    let out = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .unwrap();
    let nat = String::from_utf8_lossy(&out.stdout).into_owned();
    (61000..=61999u16)
        .filter(|p| {
            !nat.contains(&format!("--dports {p}"))
                && std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok()
        })
        .take(n)
        .collect()
}

/// A dead earlier run of the stager left a mapping of the host port the next instance leases
/// (it would shadow the new mapping: connections would go to the dead address); another
/// network maps the port after it. The stager removes its own stale mapping, skips the port
/// the other network holds and leaves that network's rule alone.
#[test]
fn stale_port_mappings_are_cleared_or_avoided() {
    let Some(st) = Stager::start() else { return };
    let ports = free_ports(3);
    let ours = format!("paddock-{}", st.bridge);
    let dead_ip = st.subnet.replace(".0/24", ".250");
    let foreign = "pdtest-foreign";
    let stale = ("hello-0-deadbeef", ports[0]);
    let other = ("foreign-0", ports[1]);
    // should the test end early: the foreign mapping goes, then portmap's chains if idle
    st.cleanup
        .stop
        .lock()
        .unwrap()
        .push(portmap("DEL", foreign, other.0, other.1, "10.251.0.2"));
    st.cleanup
        .stop
        .lock()
        .unwrap()
        .push(portmap("DEL", &ours, stale.0, stale.1, &dead_ip));
    st.cleanup
        .then
        .lock()
        .unwrap()
        .push(remove_idle_portmap_chains);
    for (cmd, what) in [
        (
            portmap("ADD", &ours, stale.0, stale.1, &dead_ip),
            "stale mapping",
        ),
        (
            portmap("ADD", foreign, other.0, other.1, "10.251.0.2"),
            "foreign mapping",
        ),
    ] {
        let out = { cmd }.output().unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(dnat_rules_of(stale.0).len(), 1);
    let droplet = st.stage(&sample_app(), &[]);
    let out = st.run_app(&droplet, "hello", 2, "64M", "32M");
    assert!(
        out.contains(&format!(
            "removed a stale mapping left by an earlier run: host port {} of {}",
            stale.1, stale.0
        )),
        "{out}"
    );
    let rows = st.ps("hello");
    assert_eq!(ports_of(&rows), [ports[0], ports[2]]);
    for port in [ports[0], ports[2]] {
        get(port).unwrap_or_else(|e| panic!("port {port}: {e}"));
    }
    assert!(
        dnat_rules_of(stale.0).is_empty(),
        "the stale mapping is still there"
    );
    assert_eq!(
        dnat_rules_of(other.0).len(),
        1,
        "the foreign mapping was touched"
    );
    st.ok(&["stop", "hello", "--grace", "1"]);
    assert_eq!(
        dnat_rules_of(other.0).len(),
        1,
        "stop touched the foreign mapping"
    );
    let del = portmap("DEL", foreign, other.0, other.1, "10.251.0.2")
        .output()
        .unwrap();
    assert!(del.status.success());
    // portmap keeps its top-level chains after its last DEL; the stager removed them when its
    // network went idle only if no other mapping was left, which was not the case here
    remove_idle_portmap_chains();
    st.cleanup.stop.lock().unwrap().clear();
    st.cleanup.then.lock().unwrap().clear();
    st.finish_clean();
}

fn ports_of(rows: &[Value]) -> Vec<u16> {
    let mut p = ports(rows);
    p.sort_unstable();
    p
}

/// portmap's top-level chains and the jumps to them, when no mapping is left in them.
fn remove_idle_portmap_chains() {
    let dnat = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&dnat.stdout)
        .lines()
        .any(|l| l.starts_with("-A "))
    {
        return;
    }
    const TO_DNAT: &[&str] = &[
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "CNI-HOSTPORT-DNAT",
    ];
    const TO_MASQ: &[&str] = &[
        "-m",
        "comment",
        "--comment",
        "CNI portfwd requiring masquerade",
        "-j",
        "CNI-HOSTPORT-MASQ",
    ];
    for (chain, rule) in [
        ("PREROUTING", TO_DNAT),
        ("OUTPUT", TO_DNAT),
        ("POSTROUTING", TO_MASQ),
    ] {
        let _ = Command::new("iptables")
            .args(["-w", "-t", "nat", "-D", chain])
            .args(rule)
            .output();
    }
    for chain in [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-MASQ",
        "CNI-HOSTPORT-SETMARK",
    ] {
        for op in ["-F", "-X"] {
            let _ = Command::new("iptables")
                .args(["-w", "-t", "nat", op, chain])
                .output();
        }
    }
}
