//! runc's command line and output formats, and the OCI spec honoured inside the sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use paddock_tests::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn app_bundle(w: &World, name: &str, app: &str, extra: &[&str]) -> PathBuf {
    let b = w.bundle(name, extra);
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": app})
    });
    b
}

/// Runs a sandbox in the foreground and returns (exit code, stdout).
fn run(w: &World, id: &str, b: &Path) -> (i32, String) {
    let r = w.paddock(&["run", "--bundle", s(b), id]);
    (r.code, r.stdout)
}

#[test]
fn run_reports_output_and_exit_code() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let b = app_bundle(
        &w,
        "b",
        "t-run",
        &["--", "sh", "-c", "echo out; echo err >&2; exit 7"],
    );
    let r = w.paddock(&["run", "--bundle", s(&b), "r1"]);
    assert_eq!(r.code, 7);
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");
    // In the host pid namespace: an init of its own namespace ignores a SIGKILL it sends itself.
    let b = app_bundle(&w, "k", "t-run", &["--", "sh", "-c", "kill -9 $$"]);
    w.edit_spec(&b, |v| {
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "pid")
    });
    assert_eq!(run(&w, "r2", &b).0, 137, "killed by SIGKILL = 128 + 9");
    // run removes the sandbox when it ends
    assert_ne!(w.paddock(&["state", "r1"]).code, 0);
}

#[test]
fn state_ps_list_events_match_runc_formats() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let b = app_bundle(
        &w,
        "b",
        "t-fmt",
        &[
            "--memory", "67108864", "--pids", "50", "--", "sleep", "1000",
        ],
    );
    let pid_file = w.path().join("init.pid");
    w.paddock(&[
        "create",
        "--bundle",
        s(&b),
        "--pid-file",
        s(&pid_file),
        "f1",
    ])
    .ok();
    let st = w.state("f1");
    for key in [
        "ociVersion",
        "id",
        "pid",
        "status",
        "bundle",
        "rootfs",
        "created",
        "owner",
    ] {
        assert!(st.get(key).is_some(), "state lacks {key}: {st}");
    }
    assert_eq!(st["status"], "created");
    assert_eq!(st["bundle"], s(&fs::canonicalize(&b).unwrap()));
    let pid = st["pid"].as_i64().unwrap();
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
    assert!(alive(pid as i32));
    w.paddock(&["start", "f1"]).ok();
    assert_eq!(w.state("f1")["status"], "running");

    let ps: Vec<i64> =
        serde_json::from_str(&w.paddock(&["ps", "--format", "json", "f1"]).ok().stdout).unwrap();
    assert_eq!(ps, vec![pid]);
    let table = w.paddock(&["ps", "f1"]);
    assert!(table.ok().stdout.lines().next().unwrap().contains("PID"));
    assert!(table.stdout.contains(&pid.to_string()));

    let list: Vec<serde_json::Value> =
        serde_json::from_str(&w.paddock(&["list", "--format", "json"]).ok().stdout).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], "f1");
    assert_eq!(w.paddock(&["list", "-q"]).ok().stdout, "f1\n");

    let ev: serde_json::Value =
        serde_json::from_str(&w.paddock(&["events", "--stats", "f1"]).ok().stdout).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], "f1");
    assert_eq!(ev["data"]["memory"]["usage"]["limit"], 67108864);
    assert_eq!(ev["data"]["pids"]["limit"], 50);
    assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1);

    // `sleep` as pid 1 of its namespace ignores SIGTERM; SIGKILL it.
    w.paddock(&["kill", "f1", "SIGKILL"]).ok();
    w.wait_status("f1", "stopped");
    assert_eq!(w.state("f1")["pid"], 0);
    w.paddock(&["delete", "f1"]).ok();
}

#[test]
fn limits_reach_the_cgroup_and_update_changes_them() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let b = app_bundle(
        &w,
        "b",
        "t-lim",
        &[
            "--memory", "67108864", "--pids", "50", "--", "sleep", "1000",
        ],
    );
    w.edit_spec(&b, |v| {
        v["linux"]["resources"]["cpu"] =
            serde_json::json!({"shares": 512, "quota": 50000, "period": 100000});
    });
    w.paddock(&["run", "-d", "--bundle", s(&b), "l1"]).ok();
    let mem = "/sys/fs/cgroup/memory/paddock/t-lim/l1";
    let pids = "/sys/fs/cgroup/pids/paddock/t-lim/l1";
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default().trim().to_string();
    if Path::new(mem).exists() {
        assert_eq!(read(&format!("{mem}/memory.limit_in_bytes")), "67108864");
        assert_eq!(
            read(&format!("{mem}/memory.memsw.limit_in_bytes")),
            "67108864",
            "no swap"
        );
        assert_eq!(read(&format!("{pids}/pids.max")), "50");
        let cpu = "/sys/fs/cgroup/cpu/paddock/t-lim/l1";
        // paddock's placement weighs every instance the same, whatever the spec says.
        assert_eq!(read(&format!("{cpu}/cpu.shares")), "1024");
        assert_eq!(read(&format!("{cpu}/cpu.cfs_quota_us")), "50000");
        assert_eq!(read(&format!("{cpu}/cpu.cfs_period_us")), "100000");
        w.paddock(&[
            "update",
            "--memory",
            "134217728",
            "--pids-limit",
            "60",
            "l1",
        ])
        .ok();
        assert_eq!(read(&format!("{mem}/memory.limit_in_bytes")), "134217728");
        assert_eq!(read(&format!("{pids}/pids.max")), "60");
        let res = r#"{"pids": {"limit": 70}}"#;
        w.paddock_with_stdin(&["update", "--resources", "-", "l1"], Some(res))
            .ok();
        assert_eq!(read(&format!("{pids}/pids.max")), "70");
    } else {
        let v2 = "/sys/fs/cgroup/paddock/t-lim/l1";
        assert_eq!(read(&format!("{v2}/memory.max")), "67108864");
        assert_eq!(read(&format!("{v2}/memory.swap.max")), "0", "no swap");
        assert_eq!(read(&format!("{v2}/cpu.max")), "50000 100000");
        assert_eq!(read(&format!("{v2}/cpu.weight")), "100", "equal weight");
        assert_eq!(read(&format!("{v2}/pids.max")), "50");
        w.paddock(&[
            "update",
            "--memory",
            "134217728",
            "--pids-limit",
            "60",
            "l1",
        ])
        .ok();
        assert_eq!(read(&format!("{v2}/memory.max")), "134217728");
        assert_eq!(read(&format!("{v2}/pids.max")), "60");
    }
    w.paddock(&["delete", "--force", "l1"]).ok();
}

#[test]
fn spec_process_and_namespaces_are_honoured() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let host_dir = w.path().join("shared");
    fs::create_dir(&host_dir).unwrap();
    fs::write(host_dir.join("hello"), "from host").unwrap();
    let hooks_out = w.path().join("hooks");
    fs::create_dir(&hooks_out).unwrap();
    let script = "echo pid=$$; hostname; id -u; id -g; ulimit -n; \
                  grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; cat /data/hello; echo; \
                  touch /rootfs-ro 2>/dev/null && echo rw || echo ro";
    let b = app_bundle(&w, "b", "t-spec", &["--", "sh", "-c", script]);
    let hook = |name: &str| serde_json::json!([{"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}", hooks_out.display())]}]);
    w.edit_spec(&b, |v| {
        v["annotations"]["io.paddock.user"] = "spec".into();
        v["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1001});
        v["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 321, "soft": 321}]);
        v["mounts"].as_array_mut().unwrap().push(serde_json::json!(
            {"destination": "/data", "type": "bind", "source": host_dir, "options": ["rbind", "ro"]}
        ));
        v["hooks"] = serde_json::json!({
            "prestart": hook("prestart"),
            "poststart": hook("poststart"),
            "poststop": hook("poststop"),
        });
    });
    fs::create_dir_all(b.join("rootfs/data")).unwrap();
    let (code, out) = run(&w, "s1", &b);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1", "own pid namespace: {out}");
    assert_eq!(lines[1], "sandbox", "own uts namespace: {out}");
    assert_eq!(lines[2], "1000", "process.user.uid: {out}");
    assert_eq!(lines[3], "1001", "process.user.gid: {out}");
    assert_eq!(lines[4], "321", "rlimits: {out}");
    // CAP_KILL (5), CAP_NET_BIND_SERVICE (10) and CAP_AUDIT_WRITE (29) only; the capability
    // sets of a non-root user: effective is empty unless ambient is set.
    assert!(lines[5].starts_with("CapEff:"), "{out}");
    assert!(
        lines[5].ends_with("0000000000000000") || lines[5].ends_with("0000000020000420"),
        "{out}"
    );
    assert_eq!(lines[6], "NoNewPrivs:\t1", "{out}");
    assert_eq!(lines[7], "from host", "bind mount: {out}");
    assert_eq!(lines[8], "ro", "readonly rootfs: {out}");
    for h in ["prestart", "poststart", "poststop"] {
        let state: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(hooks_out.join(h)).unwrap_or_else(|e| panic!("hook {h}: {e}")),
        )
        .unwrap();
        assert_eq!(state["id"], "s1", "{h}");
    }
}

#[test]
fn exec_runs_inside_and_reports_exit_code() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let b = app_bundle(&w, "b", "t-exec2", &["--", "sleep", "1000"]);
    w.paddock(&["run", "-d", "--bundle", s(&b), "e1"]).ok();
    let r = w.paddock(&["exec", "e1", "sh", "-c", "hostname; exit 3"]);
    assert_eq!(r.code, 3);
    assert_eq!(r.stdout, "sandbox\n");
    let proc_json = w.path().join("process.json");
    fs::write(
        &proc_json,
        r#"{"args":["sh","-c","echo $FOO"],"env":["PATH=/bin","FOO=bar"],"cwd":"/","user":{"uid":0,"gid":0}}"#,
    )
    .unwrap();
    let r = w.paddock(&["exec", "--process", s(&proc_json), "e1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "bar\n");
    let pid_file = w.path().join("exec.pid");
    w.paddock(&[
        "exec",
        "-d",
        "--pid-file",
        s(&pid_file),
        "e1",
        "sleep",
        "500",
    ])
    .ok();
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    w.paddock(&["delete", "--force", "e1"]).ok();
    assert!(eventually(Duration::from_secs(2), || !alive(pid)));
}

#[test]
fn explicit_cgroups_path_is_honoured() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let b = w.bundle(
        "b",
        &[
            "--cgroups-path",
            "/paddock-explicit-test/c1",
            "--",
            "sleep",
            "1000",
        ],
    );
    w.paddock(&["run", "-d", "--bundle", s(&b), "c1"]).ok();
    let pid = w.state("c1")["pid"].as_i64().unwrap();
    let dirs: Vec<PathBuf> = cgroup_dirs_of("paddock-explicit-test/c1")
        .into_iter()
        .filter(|d| d.join("cgroup.procs").exists())
        .collect();
    assert!(!dirs.is_empty(), "no cgroup at the given path");
    for d in &dirs {
        let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{}",
            d.display()
        );
    }
    w.paddock(&["delete", "--force", "c1"]).ok();
    for d in &dirs {
        assert!(!d.exists(), "{} left", d.display());
        // The caller's parent is the caller's to remove (as with runc).
        let _ = fs::remove_dir(d.parent().unwrap());
    }
}

#[test]
fn pause_resume_and_signals() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let b = app_bundle(
        &w,
        "b",
        "t-pause",
        &[
            "--",
            "sh",
            "-c",
            "trap 'echo usr1' USR1; while :; do sleep 0.05; done",
        ],
    );
    w.paddock(&["run", "-d", "--bundle", s(&b), "p1"]).ok();
    w.paddock(&["pause", "p1"]).ok();
    assert_eq!(w.state("p1")["status"], "paused");
    assert_ne!(w.paddock(&["pause", "p1"]).code, 0);
    w.paddock(&["resume", "p1"]).ok();
    assert_eq!(w.state("p1")["status"], "running");
    w.paddock(&["kill", "p1", "USR1"]).ok();
    w.paddock(&["kill", "p1", "10"]).ok();
    assert_eq!(w.state("p1")["status"], "running");
    w.paddock(&["kill", "p1", "sigkill"]).ok();
    w.wait_status("p1", "stopped");
    assert_ne!(
        w.paddock(&["kill", "p1", "TERM"]).code,
        0,
        "kill of a stopped sandbox"
    );
    w.paddock(&["delete", "p1"]).ok();
}

#[test]
fn spec_and_features_commands() {
    let w = World::new();
    let dir = w.path().join("spec");
    fs::create_dir(&dir).unwrap();
    w.paddock(&["spec", "--bundle", s(&dir)]).ok();
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(v["root"]["path"], "rootfs");
    assert_ne!(
        w.paddock(&["spec", "--bundle", s(&dir)]).code,
        0,
        "spec overwrote config.json"
    );
    let f: serde_json::Value = serde_json::from_str(&w.paddock(&["features"]).ok().stdout).unwrap();
    assert_eq!(f["linux"]["cgroup"]["v1"], true);
    assert!(w.paddock(&["--version"]).ok().stdout.contains("paddock"));
}

#[test]
fn json_log_carries_the_error_for_containerd() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let log = w.path().join("log.json");
    let r = w.paddock(&["--log", s(&log), "--log-format", "json", "start", "nosuch"]);
    assert_ne!(r.code, 0);
    let text = fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(last["msg"].as_str().unwrap().contains("nosuch"));
    assert!(chrono_like(last["time"].as_str().unwrap()));
}

fn chrono_like(t: &str) -> bool {
    t.len() > 20 && t.as_bytes()[4] == b'-' && t.contains('T') && t.ends_with('Z')
}

#[test]
fn workloads_start_with_default_signal_dispositions() {
    // paddock (a Rust program) runs with SIGPIPE ignored, and an ignored signal survives exec:
    // the init and exec'd processes must get every signal at its default, as under runc.
    if !require_root() {
        return;
    }
    let w = World::new();
    // grep itself, not under a shell: busybox sh leaves SIGQUIT ignored for a command it execs
    // in its own place.
    let show = ["grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"];
    let mut args = vec!["--"];
    args.extend(show);
    let b = app_bundle(&w, "b", "t-sig", &args);
    let (code, out) = run(&w, "s1", &b);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
    let b = app_bundle(&w, "d", "t-sig", &["--", "sleep", "1000"]);
    w.paddock(&["run", "-d", "--bundle", s(&b), "s2"]).ok();
    let mut args = vec!["exec", "s2"];
    args.extend(show);
    let r = w.paddock(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
    w.paddock(&["delete", "--force", "s2"]).ok();
}

/// The services an nsswitch.conf names for `db`, without `files` and the `[…]` actions.
fn nss_services(conf: &str, db: &str) -> Vec<String> {
    conf.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim() == db)
        .flat_map(|(_, services)| services.split_whitespace())
        .filter(|s| !s.starts_with('[') && *s != "files")
        .map(str::to_string)
        .collect()
}

#[test]
fn user_lookups_read_the_sandbox_passwd_file_only() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let module = w.path().join("libnss_paddocktest.so.2");
    gcc_fixture("nss_marker", &["-shared", "-nostdlib", "-fPIC"], &module);
    let lookup = w.path().join("lookup");
    gcc_fixture("lookup", &["-static"], &lookup);
    // HOME unset, so the init looks the process user up; the image's nsswitch.conf names the
    // module after the files.
    let b = app_bundle(&w, "b", "t-nss", &["--", "sh", "-c", "echo home=$HOME"]);
    w.edit_spec(&b, |v| {
        v["annotations"]["io.paddock.user"] = "spec".into();
        v["root"]["readonly"] = false.into();
    });
    // glibc keeps the configuration it read first: the host's, when the engine looked anything
    // up before entering the sandbox. The module goes in under every name either may give.
    let host = fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
    let mut services = nss_services(&host, "passwd");
    services.push("paddocktest".into());
    let rootfs = b.join("rootfs");
    for dir in [
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
        "lib",
        "usr/lib",
    ] {
        fs::create_dir_all(rootfs.join(dir)).unwrap();
        for service in &services {
            let name = format!("libnss_{service}.so.2");
            fs::copy(&module, rootfs.join(dir).join(name)).unwrap();
        }
    }
    fs::write(
        rootfs.join("etc/nsswitch.conf"),
        "passwd: files paddocktest\ngroup: files paddocktest\n",
    )
    .unwrap();
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:4242:4242::/home/app:/bin/sh\n",
    )
    .unwrap();
    // (the sandbox's /tmp is a tmpfs of its own)
    fs::create_dir(rootfs.join("marker")).unwrap();
    fs::set_permissions(rootfs.join("marker"), fs::Permissions::from_mode(0o1777)).unwrap();
    let marker = rootfs.join("marker/loaded");
    // Control: glibc, asked for a user the files lack, loads the module from this image.
    let out = std::process::Command::new(&lookup)
        .arg(&rootfs)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "-\n", "{out:?}");
    assert!(marker.exists(), "the control did not load the module");
    fs::remove_file(&marker).unwrap();
    // A user in the image's /etc/passwd: its home from the file.
    w.edit_spec(&b, |v| {
        v["process"]["user"] = serde_json::json!({"uid": 4242, "gid": 4242})
    });
    let (code, out) = run(&w, "n1", &b);
    assert_eq!((code, out.trim()), (0, "home=/home/app"));
    // A user the file lacks: no home, and the module named after the files is never loaded.
    w.edit_spec(&b, |v| {
        v["process"]["user"] = serde_json::json!({"uid": 4343, "gid": 4343})
    });
    let (code, out) = run(&w, "n2", &b);
    assert_eq!((code, out.trim()), (0, "home="));
    assert!(
        !marker.exists(),
        "the image's NSS module ran in the sandbox's init"
    );
    // The same for a process exec'd into a running sandbox.
    w.edit_spec(&b, |v| {
        v["process"]["args"] = serde_json::json!(["sleep", "1000"])
    });
    w.paddock(&["run", "-d", "--bundle", s(&b), "n3"]).ok();
    let r = w.paddock(&[
        "exec",
        "--user",
        "4343:4343",
        "n3",
        "sh",
        "-c",
        "echo home=$HOME",
    ]);
    w.paddock(&["delete", "--force", "n3"]).ok();
    assert_eq!((r.code, r.stdout.trim()), (0, "home="), "{}", r.stderr);
    assert!(
        !marker.exists(),
        "the image's NSS module ran in an exec'd process"
    );
}
