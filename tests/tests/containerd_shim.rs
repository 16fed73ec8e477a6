//! paddock's own containerd shim (`io.containerd.paddock.v2`, `containerd-shim-paddock-v2`)
//! under a private containerd started by the test, with the locally built busybox image: the
//! task lifecycle through `ctr`, events in order, OOM, recovery after a shim SIGKILL and a
//! containerd restart, 50 containers in one shim, log URIs, terminals, annotations — and
//! nothing left behind (no shim, socket, cgroup, mount, paddock state or process).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use paddock_tests::containerd::{
    cgroup_mounts, containerd_ready, ensure_packages, paddock_shim_dir, stdin_roundtrip,
    task_status, wait_task_stopped, Containerd, ContainerdConfig, Events, PADDOCK_SHIM_STATE,
};
use paddock_tests::{cgroup_v2, scaled};

fn ready() -> bool {
    containerd_ready().unwrap()
}

fn start() -> (Containerd, String) {
    let ctd = Containerd::start(ContainerdConfig::paddock_shim(&paddock_shim_dir())).unwrap();
    let image = ctd.import_busybox().unwrap();
    (ctd, image)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn remove(ctd: &Containerd, id: &str) {
    ctd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", id]);
    wait_task_stopped(ctd, id, Duration::from_secs(10)).unwrap();
    ctd.ctr_ok(&["tasks", "delete", id]);
    ctd.ctr_ok(&["containers", "rm", id]);
}

#[track_caller]
fn assert_gone(ctd: &Containerd, ids: &[&str]) {
    let left = ctd.wait_containers_gone(ids, Duration::from_secs(10));
    assert!(left.is_empty(), "leftovers: {left:#?}");
}

fn paddock_state(ctd: &Containerd, id: &str) -> PathBuf {
    Path::new(PADDOCK_SHIM_STATE).join(ctd.namespace()).join(id)
}

/// Whether the sandbox `<ns>/<id>` is frozen: v1 `freezer.state` FROZEN, v2 `frozen 1` in
/// `cgroup.events` (`None`: neither file exists).
fn frozen(ns: &str, id: &str) -> Option<bool> {
    let dirs: Vec<PathBuf> = cgroup_mounts()
        .into_iter()
        .map(|m| m.join(ns).join(id))
        .collect();
    if cgroup_v2() {
        let events = fs::read_to_string(dirs.first()?.join("cgroup.events")).ok()?;
        return events
            .lines()
            .find_map(|l| l.strip_prefix("frozen "))
            .map(|v| v.trim() == "1");
    }
    dirs.iter()
        .find_map(|d| fs::read_to_string(d.join("freezer.state")).ok())
        .map(|state| state.trim() == "FROZEN")
}

fn fds_of(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn shim_runs_tasks_with_output_and_exit_codes() {
    if !ready() {
        return;
    }
    let (ctd, image) = start();
    let ns = ctd.namespace().to_string();
    // foreground: output and exit code
    let out = ctd.ctr_run(&[
        "--rm",
        &image,
        "hello",
        "sh",
        "-c",
        "echo hello; echo oops >&2; exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "ctr run: {out:?}\n{}",
        ctd.log_tail(30)
    );
    assert!(text(&out.stdout).contains("hello"), "{out:?}");
    assert!(text(&out.stderr).contains("oops"), "{out:?}");
    // stdin data and EOF (CloseIO)
    stdin_roundtrip(&ctd, &image, "stdin").unwrap();
    // --null-io: writes to stdout/stderr must succeed
    ctd.ctr_run_ok(&[
        "--rm",
        "--null-io",
        &image,
        "null-io",
        "sh",
        "-c",
        "echo out || exit 7; echo err >&2 || exit 8",
    ]);

    // detached: the init is in the cgroup containerd asked for, its state in paddock's root
    let id = "sleeper";
    ctd.ctr_run_ok(&["-d", &image, id, "sleep", "1000"]);
    let (pid, status) = task_status(&ctd, id).unwrap();
    assert_eq!(status, "RUNNING");
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroup.lines().any(|l| l.ends_with(&format!("/{ns}/{id}"))),
        "{cgroup}"
    );
    assert!(
        paddock_state(&ctd, id).exists(),
        "no paddock state for {id}"
    );
    let shims = ctd.shim_pids();
    assert_eq!(
        shims.len(),
        1,
        "one shim per ungrouped container: {shims:?}"
    );
    let shim = shims[0];
    assert!(
        fs::read_to_string(format!("/proc/{shim}/cmdline"))
            .unwrap()
            .contains("containerd-shim-paddock-v2"),
        "the task is served by paddock's shim"
    );
    // the init re-parented to the shim (a child subreaper), as with runc
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, shim, "the init's parent is the shim");
    let fds_before = fds_of(shim);

    // exec: output and exit code, twice (no descriptor may leak per exec)
    for n in 0..2 {
        let exec_id = format!("e{n}");
        let out = ctd.ctr_exec(&[], id, &exec_id, &["sh", "-c", "echo exec-ok; exit 4"]);
        assert_eq!(
            out.status.code(),
            Some(4),
            "exec: {out:?}\n{}",
            ctd.log_tail(30)
        );
        assert!(text(&out.stdout).contains("exec-ok"), "{out:?}");
    }
    // the shim holds no descriptor of a deleted exec (FIFO ends, pid files, sockets)
    let deadline = Instant::now() + scaled(Duration::from_secs(3));
    while fds_of(shim) > fds_before && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        fds_of(shim) <= fds_before,
        "shim descriptors grew with the execs: {fds_before} before, {} after",
        fds_of(shim)
    );
    let ps = ctd.ctr_ok(&["tasks", "ps", id]);
    assert!(
        ps.contains(&pid.to_string()),
        "ctr task ps lists the init: {ps}"
    );
    // pause / resume
    ctd.ctr_ok(&["tasks", "pause", id]);
    assert_eq!(
        task_status(&ctd, id).map(|s| s.1).as_deref(),
        Some("PAUSED")
    );
    assert_eq!(frozen(&ns, id), Some(true), "the freezer of {ns}/{id}");
    ctd.ctr_ok(&["tasks", "resume", id]);
    assert_eq!(
        task_status(&ctd, id).map(|s| s.1).as_deref(),
        Some("RUNNING")
    );
    assert_eq!(frozen(&ns, id), Some(false), "the freezer of {ns}/{id}");
    // metrics: containerd decodes them (table and json), with real values, in the Metrics
    // type of the host's hierarchy (ctr prints each type's own rows)
    let table = ctd.ctr_ok(&["tasks", "metrics", id]);
    let (want, not) = if cgroup_v2() {
        ("cpu.usage_usec", "memory.usage_in_bytes")
    } else {
        ("memory.usage_in_bytes", "cpu.usage_usec")
    };
    assert!(
        table.contains(want) && !table.contains(not),
        "want {want}, not {not}: {table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ctd.ctr_ok(&["tasks", "metrics", "--format", "json", id])).unwrap();
    // ctr prints the decoded Metrics (v1 or v2) as they are
    let data = if json.get("Data").is_some() {
        &json["Data"]
    } else {
        &json
    };
    let pids = data["pids"]["current"]
        .as_u64()
        .or_else(|| data["Pids"]["Current"].as_u64())
        .unwrap_or(0);
    assert!(pids >= 1, "pids.current in the metrics: {json}");
    let mem = data["memory"]["usage"]["usage"]
        .as_u64()
        .or_else(|| data["memory"]["usage"].as_u64())
        .unwrap_or(0);
    assert!(mem > 0, "memory usage in the metrics: {json}");
    // checkpoint: refused, clearly
    let out = ctd.ctr(&["tasks", "checkpoint", id]);
    assert!(!out.status.success(), "checkpoint must fail: {out:?}");
    assert!(text(&out.stderr).contains("not supported"), "{out:?}");
    // kill --all (every process of the sandbox), delete
    ctd.ctr_ok(&["tasks", "kill", "--all", "-s", "SIGKILL", id]);
    wait_task_stopped(&ctd, id, Duration::from_secs(10)).unwrap();
    ctd.ctr_ok(&["tasks", "delete", id]);
    ctd.ctr_ok(&["containers", "rm", id]);
    assert_gone(&ctd, &["hello", "stdin", "null-io", id]);
    assert!(!paddock_state(&ctd, id).exists());
    ctd.stop_and_assert_clean();
}

#[test]
fn shim_publishes_task_events_in_order() {
    if !ready() {
        return;
    }
    let (ctd, image) = start();
    let events = Events::watch(&ctd).unwrap();
    let id = "evented";
    ctd.ctr_run_ok(&["-d", &image, id, "sleep", "1000"]);
    let out = ctd.ctr_exec(&[], id, "x1", &["true"]);
    assert!(out.status.success(), "{out:?}");
    ctd.ctr_ok(&["tasks", "pause", id]);
    ctd.ctr_ok(&["tasks", "resume", id]);
    remove(&ctd, id);
    let got = events.wait_for(id, "/tasks/delete", Duration::from_secs(10));
    let want = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/exit", // of the exec
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exit", // of the init
        "/tasks/delete",
    ];
    assert_eq!(
        got,
        want,
        "events of {id} out of order: {:#?}",
        events.lines()
    );
    drop(events);
    assert_gone(&ctd, &[id]);
    ctd.stop_and_assert_clean();
}

#[test]
fn shim_publishes_oom_before_exit() {
    if !ready() {
        return;
    }
    let (ctd, image) = start();
    let events = Events::watch(&ctd).unwrap();
    let id = "hog";
    // doubles a shell string until the 32 MiB limit kills it
    let out = ctd.ctr_run(&[
        "--rm",
        "--memory-limit",
        "33554432",
        &image,
        id,
        "sh",
        "-c",
        "x=aaaaaaaa; while true; do x=$x$x; done",
    ]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "OOM-killed task: {out:?}\n{}",
        ctd.log_tail(30)
    );
    let got = events.wait_for(id, "/tasks/delete", Duration::from_secs(10));
    let oom = got.iter().position(|t| t == "/tasks/oom");
    let exit = got.iter().position(|t| t == "/tasks/exit");
    assert!(
        matches!((oom, exit), (Some(o), Some(e)) if o < e),
        "want /tasks/oom before /tasks/exit: {got:?}"
    );
    drop(events);
    assert_gone(&ctd, &[id]);
    ctd.stop_and_assert_clean();
}

#[test]
fn shim_sigkill_then_containerd_cleans_up() {
    if !ready() {
        return;
    }
    let (ctd, image) = start();
    let ns = ctd.namespace().to_string();
    let id = "orphaned";
    ctd.ctr_run_ok(&["-d", &image, id, "sleep", "1000"]);
    let (pid, _) = task_status(&ctd, id).unwrap();
    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // containerd notices, runs `containerd-shim-paddock-v2 delete`: the sandbox goes
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    let state = paddock_state(&ctd, id);
    let cgroups: Vec<PathBuf> = cgroup_mounts()
        .into_iter()
        .map(|m| m.join(&ns).join(id))
        .collect();
    while Instant::now() < deadline
        && (state.exists()
            || Path::new(&format!("/proc/{pid}")).exists()
            || cgroups.iter().any(|c| c.exists()))
    {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !state.exists(),
        "paddock state {} survived the shim's death",
        state.display()
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z"),
        "the init {pid} survived"
    );
    for c in &cgroups {
        assert!(!c.exists(), "cgroup {} survived", c.display());
    }
    // containerd still knows the container; the task is gone or stopped
    let _ = ctd.ctr(&["tasks", "delete", id]);
    ctd.ctr_ok(&["containers", "rm", id]);
    assert_gone(&ctd, &[id]);
    ctd.stop_and_assert_clean();
}

#[test]
fn shim_tasks_survive_a_containerd_restart() {
    if !ready() {
        return;
    }
    let (mut ctd, image) = start();
    let id = "steady";
    ctd.ctr_run_ok(&["-d", &image, id, "sleep", "1000"]);
    let (pid, _) = task_status(&ctd, id).unwrap();
    let shim = ctd.shim_pids();
    ctd.restart().unwrap();
    assert_eq!(ctd.shim_pids(), shim, "the shim kept running");
    assert_eq!(
        task_status(&ctd, id),
        Some((pid, "RUNNING".to_string())),
        "the task kept running"
    );
    // managed again: exec, pause/resume, metrics, kill, delete — and events still flow
    let events = Events::watch(&ctd).unwrap();
    let out = ctd.ctr_exec(&[], id, "after", &["sh", "-c", "echo again; exit 2"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}\n{}", ctd.log_tail(30));
    assert!(text(&out.stdout).contains("again"));
    ctd.ctr_ok(&["tasks", "pause", id]);
    ctd.ctr_ok(&["tasks", "resume", id]);
    ctd.ctr_ok(&["tasks", "metrics", id]);
    remove(&ctd, id);
    let got = events.wait_for(id, "/tasks/delete", Duration::from_secs(10));
    assert!(
        got.contains(&"/tasks/exit".to_string()) && got.contains(&"/tasks/delete".to_string()),
        "{got:?}"
    );
    drop(events);
    assert_gone(&ctd, &[id]);
    ctd.stop_and_assert_clean();
}

#[test]
fn shim_serves_50_containers_of_one_pod() {
    if !ready() {
        return;
    }
    let (ctd, image) = start();
    let ids: Vec<String> = (0..50).map(|i| format!("pod-c{i}")).collect();
    for id in &ids {
        ctd.ctr_run_ok(&[
            "-d",
            "--annotation",
            "io.kubernetes.cri.sandbox-id=pod-1",
            &image,
            id,
            "sleep",
            "1000",
        ]);
    }
    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");
    for id in &ids {
        assert_eq!(
            task_status(&ctd, id).map(|s| s.1).as_deref(),
            Some("RUNNING"),
            "{id}"
        );
    }
    let rss_kb: u64 = fs::read_to_string(format!("/proc/{}/status", shims[0]))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    eprintln!("one shim holding 50 containers: VmRSS {rss_kb} kB");
    for id in &ids {
        remove(&ctd, id);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_gone(&ctd, &refs);
    ctd.stop_and_assert_clean();
}

#[test]
fn shim_passes_annotations_and_refuses_bad_ones() {
    if !ready() {
        return;
    }
    let (ctd, image) = start();
    let ns = ctd.namespace().to_string();
    let id = "limited";
    ctd.ctr_run_ok(&[
        "-d",
        "--annotation",
        "io.paddock.pids=17",
        &image,
        id,
        "sleep",
        "1000",
    ]);
    let pids_max = cgroup_mounts()
        .into_iter()
        .map(|m| m.join(&ns).join(id).join("pids.max"))
        .find(|p| p.exists())
        .map(|p| fs::read_to_string(p).unwrap());
    assert_eq!(
        pids_max.as_deref().map(str::trim),
        Some("17"),
        "io.paddock.pids reached the sandbox"
    );
    remove(&ctd, id);
    let out = ctd.ctr_run(&[
        "--rm",
        "--annotation",
        "io.paddock.pids=lots",
        &image,
        "refused",
        "true",
    ]);
    assert!(
        !out.status.success(),
        "a bad annotation must fail the create"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("io.paddock.pids"),
        "the error names the annotation: {err}"
    );
    let _ = ctd.ctr(&["containers", "rm", "refused"]);
    assert_gone(&ctd, &[id, "refused"]);
    ctd.stop_and_assert_clean();
}

#[test]
fn shim_log_uris_and_terminal() {
    if !ready() {
        return;
    }
    ensure_packages(&["bsdutils"]).unwrap();
    let (ctd, image) = start();
    let dir = tempfile::tempdir().unwrap();
    // file://
    let log = dir.path().join("app.log");
    let uri = format!("file://{}", log.display());
    let out = ctd.ctr_run(&[
        "--rm",
        "--log-uri",
        &uri,
        &image,
        "to-file",
        "sh",
        "-c",
        "echo to-file; echo err-file >&2",
    ]);
    assert!(out.status.success(), "{out:?}\n{}", ctd.log_tail(30));
    let got = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        got.contains("to-file") && got.contains("err-file"),
        "file log: {got:?}"
    );
    // binary://: stdout on fd 3, stderr on fd 4, ready when fd 5 closes
    let logger = dir.path().join("logger.sh");
    let sink = dir.path().join("binary.log");
    fs::write(
        &logger,
        format!(
            "#!/bin/sh\nexec 5>&-\n{{ echo \"id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE\"; cat <&3; cat <&4; }} > {}\n",
            sink.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&logger, fs::Permissions::from_mode(0o755)).unwrap();
    let uri = format!("binary://{}", logger.display());
    let out = ctd.ctr_run(&[
        "--rm",
        "--log-uri",
        &uri,
        &image,
        "to-binary",
        "sh",
        "-c",
        "echo via-binary",
    ]);
    assert!(out.status.success(), "{out:?}\n{}", ctd.log_tail(30));
    let deadline = Instant::now() + scaled(Duration::from_secs(5));
    let mut got = String::new();
    while Instant::now() < deadline {
        got = fs::read_to_string(&sink).unwrap_or_default();
        if got.contains("via-binary") {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(got.contains("via-binary"), "binary log: {got:?}");
    assert!(
        got.contains(&format!("id=to-binary ns={}", ctd.namespace())),
        "{got:?}"
    );
    // a terminal: ctr wants a console of its own, `script` gives it one
    let ctr = ctd.ctr_run_command(&["--rm", "-t", &image, "tty", "sh", "-c", "tty; exit 5"]);
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let line: Vec<String> = std::iter::once(ctr.get_program())
        .chain(ctr.get_args())
        .map(quote)
        .collect();
    let script = std::process::Command::new("script")
        .args(["-qec", &line.join(" "), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        script.status.code(),
        Some(5),
        "ctr run -t: {script:?}\n{}",
        ctd.log_tail(30)
    );
    assert!(
        text(&script.stdout).contains("/dev/pts/"),
        "the task ran on a terminal: {script:?}"
    );
    assert_gone(&ctd, &["to-file", "to-binary", "tty"]);
    ctd.stop_and_assert_clean();
}

/// `value` of the cgroup file of `pid` for `controller` (v1: `<mount>/<path>/<v1_file>`;
/// v2: the unified hierarchy's `<path>/<v2_file>`).
fn cgroup_file(pid: u32, controller: &str, v1_file: &str, v2_file: &str) -> String {
    let table = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in table.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        if ctrls.split(',').any(|c| c == controller) {
            let p = format!("/sys/fs/cgroup/{controller}{path}/{v1_file}");
            return fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("{p}: {e}"))
                .trim()
                .to_string();
        }
    }
    let path = table
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no {controller} cgroup for {pid}: {table}"));
    let base = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/unified"
    };
    let p = format!("{base}{path}/{v2_file}");
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .to_string()
}

/// containerd's `Tasks.Update` over its socket (tests/src/bin/task-update.rs): `Err` holds
/// the helper's stderr (`<grpc code>: <message>`).
fn task_update(ctd: &Containerd, id: &str, resources: &str) -> Result<(), String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_task-update"))
        .arg(ctd.address())
        .arg(ctd.namespace())
        .arg(id)
        .arg(resources)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out.stderr).trim().to_string())
    }
}

fn wait_pids(ctd: &Containerd, id: &str, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    loop {
        let p = ctd.task_pids(id);
        if p.len() == n || Instant::now() >= deadline {
            return p;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `ctr_args` (a ctr command built by the harness) on a terminal of its own (`script`)
/// whose window is `rows`x`cols` first; returns what the terminal showed.
fn on_terminal(cmd: &std::process::Command, rows: u16, cols: u16) -> std::process::Output {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect();
    let shell = format!("stty rows {rows} cols {cols}; {}", line.join(" "));
    std::process::Command::new("script")
        .args(["-qec", &shell, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// What the process prints: its terminal's size once it is known and no longer 0x0 (a new
/// terminal's size until the shim's ResizePty sets it; busybox `stty size` fails on 0x0),
/// within 5 s.
const PRINT_SIZE: &str = "i=0; until s=$(stty size 2>/dev/null) && [ -n \"$s\" ] && \
                          [ \"$s\" != \"0 0\" ]; do [ $i -ge 100 ] && break; sleep 0.05; \
                          i=$((i+1)); done; echo \"size=$s\"";

/// Update through containerd's API reaches the sandbox's cgroup (and bad updates are refused
/// with the reason, changing nothing); ResizePty reaches the terminal of a task and of an exec;
/// `kill --all` reaches exec'd processes, which a plain kill of the init does not.
#[test]
fn shim_update_resize_and_kill_all() {
    if !ready() {
        return;
    }
    ensure_packages(&["bsdutils"]).unwrap();
    let (ctd, image) = start();
    let id = "limits";
    ctd.ctr_run_ok(&[
        "-d",
        "--memory-limit",
        &(64u64 << 20).to_string(),
        &image,
        id,
        "sleep",
        "100000",
    ]);
    let (pid, _) = task_status(&ctd, id).unwrap();
    let memory = || cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max");
    let pids = || cgroup_file(pid, "pids", "pids.max", "pids.max");
    assert_eq!(memory(), (64u64 << 20).to_string());

    // Update: memory and pids limits
    task_update(
        &ctd,
        id,
        &format!(
            r#"{{"memory":{{"limit":{}}},"pids":{{"limit":33}}}}"#,
            48u64 << 20
        ),
    )
    .unwrap_or_else(|e| panic!("update: {e}\n{}", ctd.log_tail(30)));
    assert_eq!(memory(), (48u64 << 20).to_string());
    assert_eq!(pids(), "33");
    // bad updates: refused, saying why; nothing changes
    let refused = |resources: &str, needle: &str| {
        let e = task_update(&ctd, id, resources).expect_err(resources);
        assert!(e.contains(needle), "{resources}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    };
    refused("not json", "not JSON");
    refused(
        r#"{"memory":{"limit":0}}"#,
        "memory.limit 0: must be positive",
    );
    refused(r#"{"memory":{"limit":4096}}"#, "below its current usage");
    let e = task_update(&ctd, "no-such-task", r#"{"pids":{"limit":5}}"#).unwrap_err();
    assert!(e.contains("NotFound"), "{e}");
    assert_eq!(memory(), (48u64 << 20).to_string());
    assert_eq!(pids(), "33");

    let fifo = ctd.fifo_dir().to_string_lossy().into_owned();
    // kill --all. The init is pid 1 of its namespace with no SIGTERM handler: SIGTERM leaves
    // it running, while an exec'd sleep dies of it — if the signal reaches it.
    // an exec'd sleep next to the init: both pids
    let exec_sleep = |exec_id: &str| {
        let out = ctd.ctr_exec(&["-d"], id, exec_id, &["sleep", "100000"]);
        ctd.expect_ok(&format!("ctr tasks exec -d {exec_id}"), out);
        wait_pids(&ctd, id, 2)
    };
    let both = exec_sleep("e1");
    assert_eq!(both.len(), 2, "init and exec: {both:?}");
    let exec_pid = *both.iter().find(|p| **p != pid).unwrap();
    // both start with no signal blocked (not the shim's own mask)
    for p in [pid, exec_pid] {
        assert!(
            signal_masks(p).contains("SigBlk:\t0000000000000000"),
            "pid {p}: {}",
            signal_masks(p)
        );
    }
    ctd.ctr_ok(&["tasks", "kill", "-s", "SIGTERM", id]);
    thread::sleep(scaled(Duration::from_millis(500)));
    assert_eq!(ctd.task_pids(id).len(), 2, "a plain kill reached the exec");
    ctd.ctr_ok(&["tasks", "kill", "--all", "-s", "SIGTERM", id]);
    let left = wait_pids(&ctd, id, 1);
    assert_eq!(
        left,
        [pid],
        "kill --all SIGTERM: the exec must be gone; its signal masks: {}",
        signal_masks(exec_pid)
    );
    assert_eq!(task_status(&ctd, id).unwrap().1, "RUNNING");
    assert!(!alive(exec_pid), "the exec outlived kill --all");
    // and SIGKILL to all: init and a new exec both die, the task stops
    let both = exec_sleep("e2");
    assert_eq!(both.len(), 2, "{both:?}");
    ctd.ctr_ok(&["tasks", "kill", "--all", "-s", "SIGKILL", id]);
    wait_task_stopped(&ctd, id, Duration::from_secs(10)).unwrap();
    for p in &both {
        assert!(!alive(*p), "pid {p} outlived kill --all");
    }
    ctd.ctr_ok(&["tasks", "delete", id]);
    ctd.ctr_ok(&["containers", "rm", id]);

    // ResizePty: ctr sends its console's size; the task sees it on its terminal
    let run = ctd.ctr_run_command(&["--rm", "-t", &image, "sized", "sh", "-c", PRINT_SIZE]);
    let out = on_terminal(&run, 33, 77);
    assert!(
        text(&out.stdout).contains("size=33 77"),
        "ctr run -t: {out:?}\n{}",
        ctd.log_tail(30)
    );
    // and an exec's terminal
    ctd.ctr_run_ok(&["-d", &image, "term", "sleep", "100000"]);
    let exec = ctd.ctr_command(&[
        "tasks",
        "exec",
        "-t",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "sz",
        "term",
        "sh",
        "-c",
        PRINT_SIZE,
    ]);
    let out = on_terminal(&exec, 21, 99);
    assert!(
        text(&out.stdout).contains("size=21 99"),
        "ctr task exec -t: {out:?}\n{}",
        ctd.log_tail(30)
    );
    remove(&ctd, "term");
    assert_gone(&ctd, &[id, "sized", "term"]);
    ctd.stop_and_assert_clean();
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !matches!(
            s.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next()),
            Some('Z') | Some('X')
        )
    })
}

/// The `Sig*` lines of a process's status (blocked, ignored, caught signals).
fn signal_masks(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Sig") || l.starts_with("ShdPnd"))
        .collect::<Vec<_>>()
        .join(", ")
}
