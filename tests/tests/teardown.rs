//! Teardown leaves nothing: every way a sandbox's processes can hide from a naive kill.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use paddock_tests::*;

/// Bundle for sandbox `id` in app `app`, optionally sharing the host pid namespace.
fn bundle(w: &World, id: &str, app: &str, host_pid: bool, extra: &[&str]) -> PathBuf {
    let b = w.bundle(id, extra);
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": app});
        if host_pid {
            let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "pid");
        }
    });
    b
}

fn cgroup_dirs(app: &str, id: &str) -> Vec<PathBuf> {
    cgroup_dirs_of(&format!("paddock/{app}/{id}"))
}

fn sandbox_pids(app: &str, id: &str) -> Vec<i32> {
    let mut all: Vec<i32> = cgroup_dirs(app, id)
        .iter()
        .flat_map(|d| cgroup_pids(d))
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Runs `scenario`, then asserts every process it saw is dead and nothing is left.
fn check(
    app: &str,
    id: &str,
    extra: &[&str],
    host_pid: bool,
    scenario: impl FnOnce(&World) -> Vec<i32>,
) {
    if !require_root() {
        return;
    }
    let w = World::new();
    let rel = format!("paddock/{app}");
    let before = snapshot(&w.root, &rel);
    let b = bundle(&w, id, app, host_pid, extra);
    w.paddock(&["create", "--bundle", b.to_str().unwrap(), id])
        .ok();
    w.paddock(&["start", id]).ok();
    let seen = scenario(&w);
    assert!(!seen.is_empty(), "scenario saw no processes");
    for pid in &seen {
        assert!(
            eventually(Duration::from_secs(2), || !alive(*pid)),
            "pid {pid} of {id} survived teardown"
        );
    }
    for d in cgroup_dirs(app, id) {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert_eq!(
        w.paddock(&["state", id]).code,
        1,
        "state of {id} left behind"
    );
    assert_no_leak(&before, &w.root, &rel);
}

/// Tasks charged to the sandbox's pids controller, zombies included.
fn pids_current(app: &str, id: &str) -> u64 {
    cgroup_dirs(app, id)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("pids.current")).ok())
        .filter_map(|s| s.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn wait_count(app: &str, id: &str, n: usize) -> Vec<i32> {
    let ok = eventually(Duration::from_secs(10), || sandbox_pids(app, id).len() >= n);
    let pids = sandbox_pids(app, id);
    assert!(ok, "expected {n} processes in {id}, saw {}", pids.len());
    pids
}

/// A fork bomb under a pids limit, torn down by `teardown` once it has filled the limit.
fn fork_bomb(app: &str, id: &str, host_pid: bool, teardown: impl FnOnce(&World)) {
    check(
        app,
        id,
        &[
            "--pids",
            "64",
            "--",
            "sh",
            "-c",
            "b() { b | b & }; b; sleep 1000",
        ],
        host_pid,
        |w| {
            assert!(
                eventually(Duration::from_secs(10), || pids_current(app, id) >= 60),
                "the bomb never reached the pids limit"
            );
            let pids = sandbox_pids(app, id);
            teardown(w);
            pids
        },
    );
}

#[test]
fn fork_bomb_racing_the_kill() {
    let (app, id) = ("t-bomb", "bomb");
    fork_bomb(app, id, true, |w| {
        w.paddock(&["kill", "--all", id, "KILL"]).ok();
        assert!(
            sandbox_pids(app, id).is_empty(),
            "kill --all returned with live processes"
        );
        w.paddock(&["delete", id]).ok();
    });
}

#[test]
fn fork_bomb_delete_force() {
    let (app, id) = ("t-bomb2", "bomb2");
    fork_bomb(app, id, false, |w| {
        w.paddock(&["delete", "--force", id]).ok();
    });
}

#[test]
fn double_forked_daemon_outside_init_tree() {
    let (app, id) = ("t-daemon", "daemon");
    check(
        app,
        id,
        &["--", "sh", "-c", "(setsid sleep 1001 &); sleep 1000"],
        true,
        |w| {
            assert!(
                eventually(Duration::from_secs(10), || {
                    let p = sandbox_pids(app, id);
                    p.len() == 2 && p.iter().all(|p| comm(*p) == "sleep")
                }),
                "daemon never settled"
            );
            let pids = sandbox_pids(app, id);
            let init = w.state(id)["pid"].as_i64().unwrap() as i32;
            let daemon: Vec<i32> = pids.iter().copied().filter(|p| *p != init).collect();
            // The daemon's parent is not the init: it left the init's process tree.
            for p in &daemon {
                let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                let ppid: i32 = stat
                    .rsplit_once(") ")
                    .and_then(|(_, r)| r.split_whitespace().nth(1))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                assert_ne!(ppid, init, "daemon {p} is still the init's child");
            }
            w.paddock(&["kill", id, "KILL"]).ok();
            w.wait_status(id, "stopped");
            assert!(daemon.iter().all(|p| alive(*p)), "daemon died with init");
            w.paddock(&["delete", id]).ok();
            pids
        },
    );
}

#[test]
fn exec_processes() {
    let (app, id) = ("t-exec", "execs");
    check(app, id, &["--", "sleep", "1000"], false, |w| {
        for _ in 0..3 {
            w.paddock(&["exec", "--detach", id, "sleep", "2000"]).ok();
        }
        let pids = wait_count(app, id, 4);
        w.paddock(&["delete", "--force", id]).ok();
        pids
    });
}

#[test]
fn host_pid_namespace() {
    let (app, id) = ("t-hostpid", "hostpid");
    check(
        app,
        id,
        &["--", "sh", "-c", "sleep 1000 & sleep 1000 & wait"],
        true,
        |w| {
            let pids = wait_count(app, id, 3);
            w.paddock(&["delete", "--force", id]).ok();
            pids
        },
    );
}

#[test]
fn paused_sandbox() {
    let (app, id) = ("t-paused", "paused");
    check(
        app,
        id,
        &["--", "sh", "-c", "sleep 1000 & sleep 1000 & wait"],
        false,
        |w| {
            let pids = wait_count(app, id, 3);
            w.paddock(&["pause", id]).ok();
            assert_eq!(w.state(id)["status"], "paused");
            let r = w.paddock(&["delete", id]);
            assert_ne!(r.code, 0, "delete of a paused sandbox without --force");
            w.paddock(&["delete", "--force", id]).ok();
            pids
        },
    );
}

#[test]
fn init_died_leaving_children() {
    let (app, id) = ("t-orphans", "orphans");
    check(
        app,
        id,
        &[
            "--",
            "sh",
            "-c",
            "sleep 1000 & sleep 1000 & sleep 0.3; exit 0",
        ],
        true,
        |w| {
            let pids = wait_count(app, id, 3);
            w.wait_status(id, "stopped");
            let left = sandbox_pids(app, id);
            assert_eq!(left.len(), 2, "children should outlive the init");
            w.paddock(&["delete", id]).ok();
            pids
        },
    );
}
