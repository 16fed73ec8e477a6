//! The engine on cgroup v2, for real: the VM group (cargo feature `vm`; `scripts/vm-test.sh`
//! runs it in a Debian 12 guest, since this machine kind is cgroup v1 hybrid). Limits in the
//! one v2 tree, `memory.events` and `memory.oom.group` for OOM, `cgroup.kill` for teardown,
//! `cgroup.freeze` for pause, CPU weight and cpusets. Without the feature these tests are
//! ignored and say why; with it, a host that is not cgroup v2 fails them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use paddock_tests::*;

const MIB: u64 = 1 << 20;
/// Grows a shell string until the kernel kills it.
const HOG: &str = "x=a; while :; do x=\"$x$x\"; done";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn dir(app: &str, id: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup/paddock").join(app).join(id)
}

/// The `oom` lines of `paddock events` output.
fn oom_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "oom")
        .collect()
}

fn bundle(w: &World, name: &str, ann: serde_json::Value, extra: &[&str]) -> PathBuf {
    let b = w.bundle(name, extra);
    w.edit_spec(&b, |v| v["annotations"] = ann);
    b
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs cgroup v2: the VM group (scripts/vm-test.sh)"
)]
fn limits_land_in_the_v2_tree_and_update_changes_them() {
    let w = v2_world();
    let app = "t-v2lim";
    let before = snapshot(&w.root, &format!("paddock/{app}"));
    let ann = serde_json::json!({"io.paddock.app": app, "io.paddock.app.memory": "96M"});
    let b = bundle(
        &w,
        "b",
        ann,
        &[
            "--memory", "67108864", "--pids", "50", "--", "sleep", "1000",
        ],
    );
    w.edit_spec(&b, |v| {
        v["linux"]["resources"]["cpu"] =
            serde_json::json!({"quota": 50000, "period": 100000, "cpus": "0", "mems": "0"});
    });
    w.paddock(&["run", "-d", "--bundle", s(&b), "l1"]).ok();
    let d = dir(app, "l1");
    let pid = w.state("l1")["pid"].as_i64().unwrap();
    // One tree: the init is in the instance's cgroup, and nowhere else.
    assert!(read_trimmed(&d.join("cgroup.procs"))
        .lines()
        .any(|l| l == pid.to_string()));
    assert_eq!(
        read_trimmed(Path::new(&format!("/proc/{pid}/cgroup"))),
        format!("0::/paddock/{app}/l1")
    );
    // The levels above delegate the controllers the instance uses.
    for level in [
        "/sys/fs/cgroup/paddock".to_string(),
        format!("/sys/fs/cgroup/paddock/{app}"),
    ] {
        let ctl = read_trimmed(&Path::new(&level).join("cgroup.subtree_control"));
        for c in ["memory", "pids", "cpu", "cpuset"] {
            assert!(ctl.split(' ').any(|x| x == c), "{level}: {ctl}");
        }
    }
    assert_eq!(read_trimmed(&d.join("memory.max")), "67108864");
    assert_eq!(read_trimmed(&d.join("memory.swap.max")), "0", "no swap");
    assert_eq!(read_trimmed(&d.join("pids.max")), "50");
    assert_eq!(read_trimmed(&d.join("cpu.max")), "50000 100000");
    assert_eq!(read_trimmed(&d.join("cpuset.cpus")), "0");
    assert_eq!(read_trimmed(&d.join("cpuset.mems")), "0");
    assert_eq!(read_trimmed(&d.join("cpuset.cpus.effective")), "0");
    // App-wide memory on the app level.
    assert_eq!(
        read_trimmed(&dir(app, "l1").parent().unwrap().join("memory.max")),
        (96 * MIB).to_string()
    );
    // Stats come from the v2 files.
    let st: serde_json::Value =
        serde_json::from_str(&w.paddock(&["events", "--stats", "l1"]).ok().stdout).unwrap();
    assert!(
        st["data"]["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "{st}"
    );
    assert_eq!(st["data"]["pids"]["current"], 1, "{st}");
    assert_eq!(st["data"]["memory"]["usage"]["limit"], 67108864, "{st}");

    w.paddock(&[
        "update",
        "--memory",
        "134217728",
        "--pids-limit",
        "60",
        "l1",
    ])
    .ok();
    assert_eq!(read_trimmed(&d.join("memory.max")), "134217728");
    assert_eq!(read_trimmed(&d.join("pids.max")), "60");
    let res = r#"{"pids": {"limit": 70}, "cpu": {"quota": 20000, "period": 100000}}"#;
    w.paddock_with_stdin(&["update", "--resources", "-", "l1"], Some(res))
        .ok();
    assert_eq!(read_trimmed(&d.join("pids.max")), "70");
    assert_eq!(read_trimmed(&d.join("cpu.max")), "20000 100000");
    // Below current usage: refused, the limit unchanged.
    let r = w.paddock(&["update", "--memory", "4096", "l1"]);
    assert_ne!(r.code, 0);
    assert_eq!(read_trimmed(&d.join("memory.max")), "134217728");

    w.paddock(&["delete", "--force", "l1"]).ok();
    assert!(!d.exists());
    assert!(
        !d.parent().unwrap().exists(),
        "the app level goes with its last instance"
    );
    assert_no_leak(&before, &w.root, &format!("paddock/{app}"));
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs cgroup v2: the VM group (scripts/vm-test.sh)"
)]
fn oom_policy_kill_sets_oom_group_and_the_kernel_ends_every_process() {
    let w = v2_world();
    let app = "t-v2oomkill";
    let script = format!("sleep 1000 & sleep 1000 & ( sleep 0.3; {HOG} ) & wait");
    let ann = serde_json::json!({"io.paddock.app": app});
    let b = bundle(
        &w,
        "b",
        ann,
        &["--memory", "33554432", "--", "sh", "-c", &script],
    );
    w.paddock(&["create", "--bundle", s(&b), "victim"]).ok();
    let d = dir(app, "victim");
    assert_eq!(read_trimmed(&d.join("memory.oom.group")), "1");
    assert_eq!(flat_counter(&d.join("memory.events"), "oom_kill"), 0);
    let mut events = w.spawn(&["events", "--interval", "60", "victim"]);
    assert!(eventually(Duration::from_secs(5), || events
        .output()
        .contains("stats")));
    w.paddock(&["start", "victim"]).ok();
    w.wait_status("victim", "stopped");
    assert!(
        eventually(Duration::from_secs(5), || cgroup_pids(&d).is_empty()),
        "processes survived the OOM: {:?}",
        cgroup_pids(&d)
    );
    // sh, two sleeps and the hog's subshell: four processes, each reported once (the kernel's
    // oom_kill counts the victim twice). The kernel counts a member only if it still has its
    // memory when the group kill reaches it: the init, killed first, takes the sleeps of its
    // pid namespace with it, and on a slow (emulated) CPU they can be gone by then. So the
    // kernel's count is 1 to 4, and paddock must report exactly what the kernel counted.
    let ev = d.join("memory.events");
    let kills = flat_counter(&ev, "oom_kill") - flat_counter(&ev, "oom_group_kill");
    assert!((1..=4).contains(&kills), "{}", read_trimmed(&ev));
    let st = w.state("victim");
    assert_eq!(st["oomKills"], kills, "{st}");
    assert_eq!(st["ended"]["reason"], "oom", "{st}");
    assert!(events.wait_exit(Duration::from_secs(5)));
    let ooms = oom_lines(&events.output());
    assert_eq!(ooms.len() as u64, kills, "{}", events.output());
    assert!(ooms.iter().all(|o| o["data"]["level"] == "instance"));
    w.paddock(&["delete", "victim"]).ok();
    assert!(!d.exists());
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs cgroup v2: the VM group (scripts/vm-test.sh)"
)]
fn oom_policy_kernel_counts_from_memory_events_and_keeps_the_survivors() {
    let w = v2_world();
    let app = "t-v2oomkernel";
    let script = format!("( sleep 0.3; {HOG} ) & sleep 1000");
    let ann = serde_json::json!({"io.paddock.app": app, "io.paddock.oom": "kernel"});
    let b = bundle(
        &w,
        "b",
        ann,
        &["--memory", "33554432", "--", "sh", "-c", &script],
    );
    w.paddock(&["run", "-d", "--bundle", s(&b), "keeper"]).ok();
    let d = dir(app, "keeper");
    assert_eq!(read_trimmed(&d.join("memory.oom.group")), "0");
    assert!(eventually(Duration::from_secs(10), || w.state("keeper")
        ["oomKills"]
        == 1));
    assert_eq!(flat_counter(&d.join("memory.events"), "oom_kill"), 1);
    assert_eq!(flat_counter(&d.join("memory.events"), "oom_group_kill"), 0);
    std::thread::sleep(scaled(Duration::from_millis(300)));
    assert_eq!(w.state("keeper")["status"], "running");
    assert!(!cgroup_pids(&d).is_empty());
    w.paddock(&["delete", "--force", "keeper"]).ok();
    assert!(!d.exists());
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs cgroup v2: the VM group (scripts/vm-test.sh)"
)]
fn an_app_level_oom_is_reported_as_the_app() {
    let w = v2_world();
    let app = "t-v2applimit";
    let ann = serde_json::json!({"io.paddock.app": app, "io.paddock.app.memory": "40M"});
    let idle = bundle(
        &w,
        "idle",
        ann.clone(),
        &["--memory", "67108864", "--", "sleep", "1000"],
    );
    let hog_script = format!("sleep 0.5; {HOG}");
    let hog = bundle(
        &w,
        "hog",
        ann,
        &["--memory", "67108864", "--", "sh", "-c", &hog_script],
    );
    w.paddock(&["run", "-d", "--bundle", s(&idle), "app-idle"])
        .ok();
    w.paddock(&["create", "--bundle", s(&hog), "app-hog"]).ok();
    let app_dir = Path::new("/sys/fs/cgroup/paddock").join(app);
    assert_eq!(
        read_trimmed(&app_dir.join("memory.max")),
        (40 * MIB).to_string()
    );
    let mut events = w.spawn(&["events", "--interval", "60", "app-hog"]);
    assert!(eventually(Duration::from_secs(5), || events
        .output()
        .contains("stats")));
    w.paddock(&["start", "app-hog"]).ok();
    w.wait_status("app-hog", "stopped");
    assert!(events.wait_exit(Duration::from_secs(5)));
    // The app's limit fired (its local `oom` counter), the kill was in the hog.
    assert!(flat_counter(&app_dir.join("memory.events.local"), "oom") >= 1);
    // One process killed, through the hog's memory.oom.group (policy kill): the kernel counts
    // the victim twice in oom_kill and the group kill once; paddock reports one.
    let ev = dir(app, "app-hog").join("memory.events");
    assert_eq!(flat_counter(&ev, "oom_kill"), 2, "{}", read_trimmed(&ev));
    assert_eq!(
        flat_counter(&ev, "oom_group_kill"),
        1,
        "{}",
        read_trimmed(&ev)
    );
    assert_eq!(w.state("app-hog")["oomKills"], 1);
    let ooms = oom_lines(&events.output());
    assert_eq!(ooms.len(), 1, "{}", events.output());
    assert_eq!(ooms[0]["data"]["level"], "app", "{}", events.output());
    assert_eq!(w.state("app-idle")["status"], "running");
    w.paddock(&["delete", "app-hog"]).ok();
    w.paddock(&["delete", "--force", "app-idle"]).ok();
    assert!(!app_dir.exists());
}

/// Teardown of a sandbox full of forking processes goes through `cgroup.kill` (one write;
/// the kernel kills the subtree, forks included), never the freeze loop.
#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs cgroup v2: the VM group (scripts/vm-test.sh)"
)]
fn teardown_writes_cgroup_kill_and_leaves_nothing() {
    let w = v2_world();
    let app = "t-v2kill";
    let rel = format!("paddock/{app}");
    let before = snapshot(&w.root, &rel);
    let ann = serde_json::json!({"io.paddock.app": app});
    // Children that keep forking, some in a child cgroup of their own.
    let script = "for i in 1 2 3 4; do (while :; do sleep 0.05 & wait; done) & done; \
                  sleep 1000 & wait";
    let b = bundle(&w, "b", ann, &["--pids", "200", "--", "sh", "-c", script]);
    for (id, how) in [("k-kill", "kill"), ("k-delete", "delete")] {
        w.paddock(&["run", "-d", "--bundle", s(&b), id]).ok();
        let d = dir(app, id);
        assert!(eventually(Duration::from_secs(10), || cgroup_pids(&d)
            .len()
            >= 6));
        let seen = cgroup_pids(&d);
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
        let kill = inotify
            .add_watch(&d.join("cgroup.kill"), AddWatchFlags::IN_MODIFY)
            .unwrap();
        let freeze = inotify
            .add_watch(&d.join("cgroup.freeze"), AddWatchFlags::IN_MODIFY)
            .unwrap();
        match how {
            "kill" => {
                w.paddock(&["kill", "--all", id, "KILL"]).ok();
                w.wait_status(id, "stopped");
            }
            _ => {
                w.paddock(&["delete", "--force", id]).ok();
            }
        }
        // Writes only; removing the cgroup also queues IN_IGNORED for both watches.
        let written: Vec<_> = inotify
            .read_events()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.mask.contains(AddWatchFlags::IN_MODIFY))
            .map(|e| e.wd)
            .collect();
        assert!(
            written.contains(&kill),
            "{how}: cgroup.kill was not written"
        );
        assert!(
            !written.contains(&freeze),
            "{how}: the freeze loop ran although cgroup.kill works"
        );
        for pid in &seen {
            assert!(
                eventually(Duration::from_secs(2), || !alive(*pid)),
                "{how}: pid {pid} survived"
            );
        }
        if how == "kill" {
            assert!(cgroup_pids(&d).is_empty());
            w.paddock(&["delete", id]).ok();
        }
        assert!(!d.exists(), "{how}: {} left", d.display());
    }
    assert_no_leak(&before, &w.root, &rel);
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs cgroup v2: the VM group (scripts/vm-test.sh)"
)]
fn pause_freezes_the_v2_cgroup() {
    let w = v2_world();
    let app = "t-v2pause";
    let ann = serde_json::json!({"io.paddock.app": app});
    let b = bundle(&w, "b", ann, &["--", "sh", "-c", "sleep 1000 & wait"]);
    w.paddock(&["run", "-d", "--bundle", s(&b), "p1"]).ok();
    let d = dir(app, "p1");
    w.paddock(&["pause", "p1"]).ok();
    assert_eq!(read_trimmed(&d.join("cgroup.freeze")), "1");
    assert!(eventually(Duration::from_secs(5), || read_trimmed(
        &d.join("cgroup.events")
    )
    .lines()
    .any(|l| l == "frozen 1")));
    assert_eq!(w.state("p1")["status"], "paused");
    w.paddock(&["resume", "p1"]).ok();
    assert_eq!(read_trimmed(&d.join("cgroup.freeze")), "0");
    assert_eq!(w.state("p1")["status"], "running");
    // A paused sandbox still goes away whole.
    w.paddock(&["pause", "p1"]).ok();
    let pids = cgroup_pids(&d);
    w.paddock(&["delete", "--force", "p1"]).ok();
    for pid in pids {
        assert!(eventually(Duration::from_secs(2), || !alive(pid)));
    }
    assert!(!d.exists());
}
