//! CPU policy on cgroup v2, for real: the VM group (cargo feature `vm`; `scripts/vm-test.sh`
//! runs it in a 2-CPU guest). Equal `cpu.weight` at both levels and shares that follow it
//! under contention, caps in `cpu.max` that re-balance as instances come and go, an app cap
//! that throttles, and an exclusive CPU in `cpuset.cpus` that no other sandbox runs on. The
//! same contract as `cpu.rs` on v1. Without the feature these tests are ignored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use paddock_tests::*;

const BUSY: &str = "while :; do :; done";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(w: &World, b: &Path, id: &str) {
    w.paddock(&["run", "-d", "--bundle", s(b), id]).ok();
}

fn cg(rel: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// CPU time used by a cgroup (`cpu.stat` `usage_usec`).
fn usage_usec(rel: &str) -> u64 {
    read(&cg(rel).join("cpu.stat"))
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec ")?.parse().ok())
        .unwrap()
}

/// The `Cpus_allowed_list` of every process of a sandbox.
fn allowed(w: &World, id: &str) -> Vec<String> {
    let r = w.paddock(&["ps", "--format", "json", id]);
    r.ok();
    let pids: Vec<i32> = serde_json::from_str(&r.stdout).unwrap();
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .collect()
}

#[track_caller]
fn assert_allowed(w: &World, id: &str, cpus: &str) {
    let got = allowed(w, id);
    assert!(
        !got.is_empty() && got.iter().all(|c| c == cpus),
        "{id}: Cpus_allowed_list {got:?}, want {cpus}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs cgroup v2: the VM group (scripts/vm-test.sh)"
)]
fn equal_weights_at_both_levels_share_a_contended_cpu() {
    let w = v2_world();
    let before = snapshot(&w.root, "paddock");
    let app = |a: &str| serde_json::json!({ "io.paddock.app": a });
    // Everything on CPU 0, so that the instances contend.
    let ids = [
        ("t-v2cpu-a", "a1"),
        ("t-v2cpu-a", "a2"),
        ("t-v2cpu-b", "b1"),
    ];
    for (a, id) in ids {
        let b = w.annotated_bundle(id, app(a), Some("0"), BUSY);
        run(&w, &b, id);
    }
    let rels: Vec<String> = ids
        .iter()
        .map(|(a, id)| format!("/paddock/{a}/{id}"))
        .collect();
    for rel in &rels {
        assert_eq!(read(&cg(rel).join("cpu.weight")), "100", "{rel}");
        assert_eq!(read(&cg(rel).join("cpuset.cpus")), "0", "{rel}");
        assert_eq!(read(&cg(rel).join("cpu.max")), "max 100000", "{rel}");
    }
    for a in ["t-v2cpu-a", "t-v2cpu-b"] {
        assert_eq!(
            read(&cg(&format!("/paddock/{a}")).join("cpu.weight")),
            "100"
        );
    }
    for (_, id) in ids {
        assert_allowed(&w, id, "0");
    }
    std::thread::sleep(Duration::from_secs(1));
    let start: Vec<u64> = rels.iter().map(|r| usage_usec(r)).collect();
    std::thread::sleep(Duration::from_secs(6));
    let used: Vec<f64> = rels
        .iter()
        .zip(&start)
        .map(|(r, s)| (usage_usec(r) - s) as f64)
        .collect();
    let (a1, a2, b1) = (used[0], used[1], used[2]);
    eprintln!("CPU us over 6 s: a1 {a1} a2 {a2} b1 {b1}");
    assert!(a1 > 1e5 && a2 > 1e5 && b1 > 1e5, "no progress: {used:?}");
    // Two instances of one app get the same; the other app's one instance as much as both.
    let within = |x: f64, y: f64, tol: f64| (x / y - 1.0).abs() <= tol;
    assert!(within(a1, a2, 0.2), "a1 {a1} vs a2 {a2}");
    assert!(within(b1, a1 + a2, 0.25), "b1 {b1} vs a1+a2 {}", a1 + a2);
    w.cleanup();
    assert_no_leak(&before, &w.root, "paddock");
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs cgroup v2: the VM group (scripts/vm-test.sh)"
)]
fn caps_in_cpu_max_rebalance_and_an_app_cap_throttles() {
    let w = v2_world();
    let before = snapshot(&w.root, "paddock");
    let ncpu = 2;
    let cap = serde_json::json!({ "io.paddock.app": "t-v2cap", "io.paddock.cpu": "cap" });
    let rel = |id: &str| format!("/paddock/t-v2cap/{id}");
    let max = |id: &str| read(&cg(&rel(id)).join("cpu.max"));
    let each = |n: u64| format!("{} 100000", 100_000 * ncpu / n);
    let b = w.annotated_bundle("c", cap, None, "sleep 1000");
    run(&w, &b, "c1");
    assert_eq!(max("c1"), each(1));
    run(&w, &b, "c2");
    assert_eq!(max("c1"), each(2));
    assert_eq!(max("c2"), each(2));
    run(&w, &b, "c3");
    for id in ["c1", "c2", "c3"] {
        assert_eq!(max(id), each(3), "{id}");
    }
    w.paddock(&["delete", "--force", "c2"]).ok();
    assert_eq!(max("c1"), each(2));
    assert_eq!(max("c3"), each(2));
    w.cleanup();

    // A busy instance of an app capped at 0.2 CPU: throttled, and stats say so.
    let ann = serde_json::json!({
        "io.paddock.app": "t-v2appcap", "io.paddock.app.cpu": "0.2", "io.paddock.cpu": "cap",
    });
    let b = w.annotated_bundle("busy", ann, None, BUSY);
    run(&w, &b, "busy");
    let app = "/paddock/t-v2appcap";
    assert_eq!(read(&cg(app).join("cpu.max")), "20000 100000");
    let start = usage_usec(app);
    std::thread::sleep(Duration::from_secs(3));
    let used = usage_usec(app) - start;
    eprintln!("app capped at 0.2 CPU used {used} us in 3 s");
    assert!(used > 50_000, "no progress: {used}");
    assert!(used < 900_000, "over its cap: {used} us in 3 s");
    let r = w.paddock(&["events", "--stats", "busy"]);
    let v: serde_json::Value = serde_json::from_str(r.ok().stdout.trim()).unwrap();
    let cpu = &v["data"]["cpu"];
    assert!(
        cpu["throttling"]["throttledPeriods"].as_u64().unwrap_or(0) > 0,
        "{cpu}"
    );
    w.cleanup();
    assert!(!cg(app).exists());
    assert_no_leak(&before, &w.root, "paddock");
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs cgroup v2: the VM group (scripts/vm-test.sh)"
)]
fn an_exclusive_cpu_in_cpuset_is_its_own_until_deleted() {
    let w = v2_world();
    assert_eq!(
        read(Path::new("/sys/devices/system/cpu/online")),
        "0-1",
        "the guest has 2 CPUs"
    );
    let before = snapshot(&w.root, "paddock");
    let app = serde_json::json!({ "io.paddock.app": "t-v2excl" });
    let sleeper = w.annotated_bundle("s", app, None, "sleep 1000");
    run(&w, &sleeper, "e1");
    assert_allowed(&w, "e1", "0-1");
    let excl = w.annotated_bundle(
        "ex",
        serde_json::json!({ "io.paddock.app": "t-v2excl", "io.paddock.cpu": "exclusive:1" }),
        None,
        "sleep 1000 & sleep 1000 & while :; do :; done",
    );
    run(&w, &excl, "x");
    run(&w, &sleeper, "e2");
    assert_eq!(read(&cg("/paddock/t-v2excl/x").join("cpuset.cpus")), "0");
    assert_eq!(
        read(&cg("/paddock/t-v2excl/x").join("cpuset.cpus.effective")),
        "0"
    );
    assert!(eventually(Duration::from_secs(2), || allowed(&w, "x")
        .len()
        >= 3));
    assert_allowed(&w, "x", "0");
    for id in ["e1", "e2"] {
        assert_eq!(
            read(&cg(&format!("/paddock/t-v2excl/{id}")).join("cpuset.cpus")),
            "1"
        );
        assert_allowed(&w, id, "1");
    }
    w.paddock(&["delete", "--force", "x"]).ok();
    for id in ["e1", "e2"] {
        assert_allowed(&w, id, "0-1");
    }
    w.cleanup();
    assert_no_leak(&before, &w.root, "paddock");
}
