//! Memory limits and the OOM notifier: every OOM kill reported once, none invented.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use paddock_tests::*;

const MIB: u64 = 1 << 20;
/// Grows a shell string until the kernel kills it.
const HOG: &str = "x=a; while :; do x=\"$x$x\"; done";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn bundle(
    w: &World,
    name: &str,
    memory: u64,
    annotations: serde_json::Value,
    script: &str,
) -> PathBuf {
    let m = memory.to_string();
    let b = w.bundle(name, &["--memory", &m, "--", "sh", "-c", script]);
    w.edit_spec(&b, |v| v["annotations"] = annotations);
    b
}

fn oom_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "oom")
        .collect()
}

/// The sandbox's memory cgroup: v1's memory hierarchy, or the v2 tree.
fn memory_dir(app: &str, id: &str) -> PathBuf {
    let base = if cgroup_v2() {
        "/sys/fs/cgroup/paddock"
    } else {
        "/sys/fs/cgroup/memory/paddock"
    };
    Path::new(base).join(app).join(id)
}

#[test]
fn a_hog_is_oom_killed_and_reported_once() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let ann = serde_json::json!({"io.paddock.app": "t-oom"});
    let b = bundle(&w, "b", 32 * MIB, ann, &format!("sleep 0.3; {HOG}"));
    w.paddock(&["create", "--bundle", s(&b), "hog"]).ok();
    // Swap is off unless asked: memsw = limit.
    let memsw = memory_dir("t-oom", "hog").join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        let v = std::fs::read_to_string(&memsw).unwrap();
        assert_eq!(v.trim(), (32 * MIB).to_string());
    }
    let mut events = w.spawn(&["events", "--interval", "1", "hog"]);
    w.paddock(&["start", "hog"]).ok();
    w.wait_status("hog", "stopped");
    assert!(
        events.wait_exit(Duration::from_secs(5)),
        "events did not end with the sandbox"
    );
    let ooms = oom_lines(&events.output());
    assert_eq!(
        ooms.len(),
        1,
        "expected exactly one OOM event: {} {}",
        events.output(),
        events.errors()
    );
    assert_eq!(ooms[0]["id"], "hog");
    assert_eq!(ooms[0]["data"]["level"], "instance");
    let st = w.state("hog");
    assert_eq!(st["oomKills"], 1, "{st}");
    assert_eq!(st["ended"]["reason"], "oom", "{st}");
    w.paddock(&["delete", "hog"]).ok();
}

#[test]
fn stopping_is_not_an_oom_even_with_reused_ids() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let ann = serde_json::json!({"io.paddock.app": "t-nooom"});
    let b = bundle(&w, "b", 32 * MIB, ann, "sleep 1000");
    let before = snapshot(&w.root, "paddock/t-nooom");
    for i in 0..100 {
        w.paddock(&["create", "--bundle", s(&b), "same"]).ok();
        w.paddock(&["start", "same"]).ok();
        let mut events = w.spawn(&["events", "--interval", "60", "same"]);
        // Let the watcher register before the sandbox goes away.
        assert!(eventually(Duration::from_secs(5), || events
            .output()
            .contains("stats")));
        w.paddock(&["kill", "same", "KILL"]).ok();
        w.wait_status("same", "stopped");
        let st = w.state("same");
        assert_eq!(st["oomKills"], 0, "cycle {i}: {st}");
        assert_eq!(st["ended"]["reason"], "signal", "cycle {i}: {st}");
        w.paddock(&["delete", "same"]).ok();
        assert!(
            events.wait_exit(Duration::from_secs(5)),
            "cycle {i}: events outlived delete"
        );
        assert!(
            oom_lines(&events.output()).is_empty(),
            "cycle {i}: spurious OOM: {}",
            events.output()
        );
    }
    assert_no_leak(&before, &w.root, "paddock/t-nooom");
}

#[test]
fn policy_kill_ends_every_process() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let ann = serde_json::json!({"io.paddock.app": "t-oomkill"});
    let script = format!("sleep 1000 & sleep 1000 & ( sleep 0.3; {HOG} ) & wait");
    let b = bundle(&w, "b", 32 * MIB, ann, &script);
    w.paddock(&["run", "-d", "--bundle", s(&b), "victim"]).ok();
    let dir = memory_dir("t-oomkill", "victim");
    assert!(eventually(Duration::from_secs(10), || w.state("victim")
        ["status"]
        == "stopped"));
    assert!(
        eventually(Duration::from_secs(5), || cgroup_pids(&dir).is_empty()),
        "processes survived the OOM: {:?}",
        cgroup_pids(&dir)
    );
    let st = w.state("victim");
    assert!(st["oomKills"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(st["ended"]["reason"], "oom", "{st}");
    w.paddock(&["delete", "victim"]).ok();
}

#[test]
fn policy_kernel_keeps_the_survivors() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let ann = serde_json::json!({"io.paddock.app": "t-oomkernel", "io.paddock.oom": "kernel"});
    let script = format!("( sleep 0.3; {HOG} ) & sleep 1000");
    let b = bundle(&w, "b", 32 * MIB, ann, &script);
    w.paddock(&["run", "-d", "--bundle", s(&b), "keeper"]).ok();
    assert!(eventually(Duration::from_secs(10), || w.state("keeper")
        ["oomKills"]
        == 1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.state("keeper")["status"], "running");
    w.paddock(&["delete", "--force", "keeper"]).ok();
}

#[test]
fn a_neighbour_under_load_is_unaffected() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let ann = serde_json::json!({"io.paddock.app": "t-neigh"});
    let hog = bundle(
        &w,
        "hog",
        32 * MIB,
        ann.clone(),
        &format!("sleep 0.5; {HOG}"),
    );
    // The neighbour keeps touching ~8 MiB of its 64 MiB.
    let busy = bundle(
        &w,
        "busy",
        64 * MIB,
        ann,
        "x=$(head -c 8388608 /dev/zero | tr '\\0' a); while :; do y=\"$x\"; done",
    );
    w.paddock(&["run", "-d", "--bundle", s(&busy), "neighbour"])
        .ok();
    let mut events = w.spawn(&["events", "--interval", "60", "neighbour"]);
    w.paddock(&["run", "-d", "--bundle", s(&hog), "noisy"]).ok();
    w.wait_status("noisy", "stopped");
    assert_eq!(w.state("noisy")["ended"]["reason"], "oom");
    std::thread::sleep(Duration::from_millis(300));
    let st = w.state("neighbour");
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["oomKills"], 0, "{st}");
    assert!(
        oom_lines(&events.output()).is_empty(),
        "{}",
        events.output()
    );
    w.paddock(&["delete", "--force", "neighbour"]).ok();
    w.paddock(&["delete", "noisy"]).ok();
    assert!(events.wait_exit(Duration::from_secs(5)));
}

#[test]
fn an_app_level_limit_is_reported_as_the_app() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let ann = serde_json::json!({"io.paddock.app": "t-applimit", "io.paddock.app.memory": "40M"});
    let idle = bundle(&w, "idle", 64 * MIB, ann.clone(), "sleep 1000");
    let hog = bundle(&w, "hog", 64 * MIB, ann, &format!("sleep 0.5; {HOG}"));
    w.paddock(&["run", "-d", "--bundle", s(&idle), "app-idle"])
        .ok();
    let app_limit = if cgroup_v2() {
        Path::new("/sys/fs/cgroup/paddock/t-applimit/memory.max")
    } else {
        Path::new("/sys/fs/cgroup/memory/paddock/t-applimit/memory.limit_in_bytes")
    };
    w.paddock(&["create", "--bundle", s(&hog), "app-hog"]).ok();
    if app_limit.exists() {
        assert_eq!(
            std::fs::read_to_string(app_limit).unwrap().trim(),
            (40 * MIB).to_string()
        );
    }
    let mut events = w.spawn(&["events", "--interval", "60", "app-hog"]);
    assert!(eventually(Duration::from_secs(5), || events
        .output()
        .contains("stats")));
    w.paddock(&["start", "app-hog"]).ok();
    w.wait_status("app-hog", "stopped");
    assert!(events.wait_exit(Duration::from_secs(5)));
    let ooms = oom_lines(&events.output());
    assert_eq!(ooms.len(), 1, "{}", events.output());
    assert_eq!(
        ooms[0]["data"]["level"], "app",
        "the 40M app limit fired, not the 64M one"
    );
    assert_eq!(w.state("app-idle")["status"], "running");
    w.paddock(&["delete", "app-hog"]).ok();
    w.paddock(&["delete", "--force", "app-idle"]).ok();
}

#[test]
fn bad_limits_get_clear_errors() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let app = "t-badmem";
    let before = snapshot(&w.root, &format!("paddock/{app}"));
    let ann = serde_json::json!({"io.paddock.app": app});
    for (name, memory, want) in [
        ("neg", serde_json::json!({"limit": -5}), "limit -5"),
        (
            "swap",
            serde_json::json!({"limit": 67108864, "swap": 33554432}),
            "smaller than the memory limit",
        ),
    ] {
        let b = bundle(&w, name, 32 * MIB, ann.clone(), "sleep 1000");
        w.edit_spec(&b, |v| v["linux"]["resources"]["memory"] = memory);
        let r = w.paddock(&["create", "--bundle", s(&b), name]);
        assert_ne!(r.code, 0);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains(want), "{}", r.stderr);
    }
    let b = bundle(
        &w,
        "big",
        64 * MIB,
        ann,
        // A loop, not a final `sleep`: busybox sh would exec the last command and drop `x`.
        "x=$(head -c 16777216 /dev/zero | tr '\\0' a); while :; do sleep 1; done",
    );
    w.paddock(&["run", "-d", "--bundle", s(&b), "big"]).ok();
    assert!(eventually(Duration::from_secs(5), || {
        let ev: serde_json::Value =
            serde_json::from_str(&w.paddock(&["events", "--stats", "big"]).stdout)
                .unwrap_or_default();
        ev["data"]["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 16 * MIB
    }));
    let r = w.paddock(&["update", "--memory", "4194304", "big"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("below its current usage"), "{}", r.stderr);
    let r = w.paddock_with_stdin(
        &["update", "--resources", "-", "big"],
        Some(r#"{"memory":{"limit":-7}}"#),
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("limit -7"), "{}", r.stderr);
    let r = w.paddock(&[
        "update",
        "--memory",
        "134217728",
        "--memory-swap",
        "67108864",
        "big",
    ]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("smaller than the memory limit"),
        "{}",
        r.stderr
    );
    w.paddock(&["delete", "--force", "big"]).ok();
    assert_no_leak(&before, &w.root, &format!("paddock/{app}"));
}
