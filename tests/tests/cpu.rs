//! CPU policy on the real kernel: equal shares under contention at both levels, caps that
//! re-balance as instances come and go, an exclusive CPU no other sandbox runs on, the pool
//! recomputed on delete and on `update`, and clear errors for bad values.
//!
//! Other work runs on this machine at the same time, so shares are compared with each other,
//! never with an absolute figure. The files are read from cgroup v1 hierarchies or the v2 tree,
//! whichever the host has.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use paddock_tests::*;

const BUSY: &str = "while :; do :; done";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(w: &World, b: &Path, id: &str) {
    w.paddock(&["create", "--bundle", s(b), id]).ok();
    w.paddock(&["start", id]).ok();
}

/// The directory of cgroup `rel` in the hierarchy of `controller` (v1) or the v2 tree.
fn cg(controller: &str, rel: &str) -> PathBuf {
    let base = Path::new("/sys/fs/cgroup");
    let base = if cgroup_v2() {
        base.to_path_buf()
    } else {
        base.join(controller)
    };
    base.join(rel.trim_start_matches('/'))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// CPU time used by a cgroup, in ns.
fn usage(rel: &str) -> u64 {
    if cgroup_v2() {
        let stat = read(&cg("cpu", rel).join("cpu.stat"));
        let usec: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .unwrap()
            .parse()
            .unwrap();
        return usec * 1000;
    }
    read(&cg("cpuacct", rel).join("cpuacct.usage"))
        .parse()
        .unwrap()
}

/// The weight of a cgroup, as v1 shares (v2 weight 100 is v1's 1024).
fn shares(rel: &str) -> String {
    if cgroup_v2() {
        return match read(&cg("cpu", rel).join("cpu.weight")).as_str() {
            "100" => "1024".into(),
            w => format!("weight {w}"),
        };
    }
    read(&cg("cpu", rel).join("cpu.shares"))
}

/// The CFS quota of a cgroup in µs, `-1` for none; the period must be paddock's.
fn quota(rel: &str) -> String {
    if cgroup_v2() {
        let max = read(&cg("cpu", rel).join("cpu.max"));
        let (q, period) = max.split_once(' ').unwrap();
        assert_eq!(period, "100000", "{rel}");
        return if q == "max" { "-1".into() } else { q.into() };
    }
    let q = read(&cg("cpu", rel).join("cpu.cfs_quota_us"));
    if q != "-1" {
        assert_eq!(
            read(&cg("cpu", rel).join("cpu.cfs_period_us")),
            "100000",
            "{rel}"
        );
    }
    q
}

/// The `Cpus_allowed_list` of every process of a sandbox.
fn allowed(w: &World, id: &str) -> Vec<String> {
    let r = w.paddock(&["ps", "--format", "json", id]);
    r.ok();
    let pids: Vec<i32> = serde_json::from_str(&r.stdout).unwrap();
    assert!(!pids.is_empty(), "{id} has no process");
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string())
        })
        .collect()
}

/// Every process of the sandbox may run exactly on `cpus`.
fn assert_allowed(w: &World, id: &str, cpus: &str) {
    let got = allowed(w, id);
    assert!(
        got.iter().all(|c| c == cpus),
        "{id}: Cpus_allowed_list {got:?}, want {cpus}"
    );
}

/// The sandboxes in this world's CPU registry.
fn registered(w: &World) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(w.path().join("cpu/registry.json")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["sandboxes"]
        .as_object()
        .map(|m| {
            m.values()
                .map(|e| e["id"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn online_cpus() -> String {
    read(Path::new("/sys/devices/system/cpu/online"))
}

#[test]
fn equal_shares_under_contention_at_both_levels() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let before = snapshot(&w.root, "paddock");
    let app = |a: &str| serde_json::json!({ "io.paddock.app": a });
    // Everything on CPU 0, so that the instances contend even when the other CPU is idle.
    let ids = [("t-cpu-a", "a1"), ("t-cpu-a", "a2"), ("t-cpu-b", "b1")];
    for (a, id) in ids {
        let b = w.annotated_bundle(id, app(a), Some("0"), BUSY);
        run(&w, &b, id);
    }
    // An idle neighbour in app b leaves its share to b1.
    let b = w.annotated_bundle("idle", app("t-cpu-b"), Some("0"), "sleep 1000");
    run(&w, &b, "b-idle");
    for (a, id) in ids {
        let rel = format!("/paddock/{a}/{id}");
        assert_eq!(shares(&rel), "1024", "{rel}");
        assert_eq!(read(&cg("cpuset", &rel).join("cpuset.cpus")), "0", "{rel}");
        assert_eq!(quota(&rel), "-1", "{rel}");
        assert_allowed(&w, id, "0");
    }
    for a in ["t-cpu-a", "t-cpu-b"] {
        assert_eq!(shares(&format!("/paddock/{a}")), "1024");
    }
    std::thread::sleep(Duration::from_millis(500));
    let rels: Vec<String> = ids
        .iter()
        .map(|(a, id)| format!("/paddock/{a}/{id}"))
        .collect();
    let start: Vec<u64> = rels.iter().map(|r| usage(r)).collect();
    std::thread::sleep(Duration::from_secs(4));
    let used: Vec<f64> = rels
        .iter()
        .zip(&start)
        .map(|(r, s)| (usage(r) - s) as f64)
        .collect();
    let (a1, a2, b1) = (used[0], used[1], used[2]);
    eprintln!("CPU ns over 4 s: a1 {a1} a2 {a2} b1 {b1}");
    assert!(a1 > 1e8 && a2 > 1e8 && b1 > 1e8, "no progress: {used:?}");
    // Two instances of one app get the same; the other app's single instance as much as both.
    let within = |x: f64, y: f64, tol: f64| (x / y - 1.0).abs() <= tol;
    assert!(within(a1, a2, 0.15), "a1 {a1} vs a2 {a2}");
    assert!(within(b1, a1 + a2, 0.2), "b1 {b1} vs a1+a2 {}", a1 + a2);
    w.cleanup();
    assert!(registered(&w).is_empty(), "{:?}", registered(&w));
    assert_no_leak(&before, &w.root, "paddock");
}

#[test]
fn caps_rebalance_as_instances_come_and_go() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let before = snapshot(&w.root, "paddock");
    let ncpu = online_cpus()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        })
        .sum::<u64>();
    let cap = serde_json::json!({ "io.paddock.app": "t-cap", "io.paddock.cpu": "cap" });
    let rel = |id: &str| format!("/paddock/t-cap/{id}");
    let b = w.annotated_bundle("c", cap.clone(), None, "sleep 1000");
    let each = |n: u64| (100_000 * ncpu / n).to_string();
    run(&w, &b, "c1");
    assert_eq!(quota(&rel("c1")), each(1));
    run(&w, &b, "c2");
    assert_eq!(quota(&rel("c1")), each(2));
    assert_eq!(quota(&rel("c2")), each(2));
    // An equal instance is not capped and does not count.
    let e = w.annotated_bundle(
        "e",
        serde_json::json!({"io.paddock.app": "t-cap"}),
        None,
        "sleep 1000",
    );
    run(&w, &e, "e1");
    assert_eq!(quota(&rel("e1")), "-1");
    run(&w, &b, "c3");
    for id in ["c1", "c2", "c3"] {
        assert_eq!(quota(&rel(id)), each(3), "{id}");
    }
    w.paddock(&["delete", "--force", "c2"]).ok();
    assert_eq!(quota(&rel("c1")), each(2));
    assert_eq!(quota(&rel("c3")), each(2));
    w.paddock(&["delete", "--force", "c1"]).ok();
    assert_eq!(quota(&rel("c3")), each(1));
    w.cleanup();
    assert!(registered(&w).is_empty());
    assert_no_leak(&before, &w.root, "paddock");
}

/// A busy capped instance of an app capped at 0.2 CPU uses no more than that (its own cap is
/// bounded by its app's), and `events --stats` reports its usage and its throttling.
#[test]
fn app_cap_throttles_and_stats_show_it() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let before = snapshot(&w.root, "paddock");
    let ann = serde_json::json!({
        "io.paddock.app": "t-appcap",
        "io.paddock.app.cpu": "0.2",
        "io.paddock.cpu": "cap",
    });
    let b = w.annotated_bundle("busy", ann, None, BUSY);
    run(&w, &b, "busy");
    let app = "/paddock/t-appcap";
    assert_eq!(quota(app), "20000");
    assert_eq!(quota(&format!("{app}/busy")), "20000");
    let start = usage(app);
    std::thread::sleep(Duration::from_secs(2));
    let used = usage(app) - start;
    eprintln!("app capped at 0.2 CPU used {used} ns in 2 s");
    assert!(used > 50_000_000, "no progress: {used}");
    assert!(used < 600_000_000, "over its cap: {used} ns in 2 s");
    let r = w.paddock(&["events", "--stats", "busy"]);
    r.ok();
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let cpu = &v["data"]["cpu"];
    assert!(cpu["usage"]["total"].as_u64().unwrap_or(0) > 0, "{cpu}");
    assert!(
        cpu["throttling"]["throttledPeriods"].as_u64().unwrap_or(0) > 0,
        "{cpu}"
    );
    w.cleanup();
    assert!(
        !cg("cpu", app).exists(),
        "the app cgroup outlived its last instance"
    );
    assert_no_leak(&before, &w.root, "paddock");
}

#[test]
fn an_exclusive_cpu_is_its_own_until_released_or_deleted() {
    if !require_root() {
        return;
    }
    let all = online_cpus();
    if all != "0-1" {
        eprintln!("skipped: written for a 2-CPU node, this one has {all}");
        return;
    }
    let w = World::new();
    let before = snapshot(&w.root, "paddock");
    let app = serde_json::json!({ "io.paddock.app": "t-excl" });
    let sleeper = w.annotated_bundle("s", app.clone(), None, "sleep 1000");
    run(&w, &sleeper, "e1");
    // A sandbox in the caller's own cgroup is under the node's policy as well.
    let explicit = w.annotated_bundle("x", serde_json::json!({}), None, "sleep 1000");
    w.edit_spec(&explicit, |v| {
        v["linux"]["cgroupsPath"] = serde_json::json!("/t-cpu-explicit-e3")
    });
    run(&w, &explicit, "e3");
    assert_allowed(&w, "e1", "0-1");
    let excl = w.annotated_bundle(
        "ex",
        serde_json::json!({ "io.paddock.app": "t-excl", "io.paddock.cpu": "exclusive:1" }),
        None,
        // Children too: every process of the sandbox is pinned.
        "sleep 1000 & sleep 1000 & while :; do :; done",
    );
    run(&w, &excl, "x");
    run(&w, &sleeper, "e2");
    assert_eq!(
        read(&cg("cpuset", "/paddock/t-excl/x").join("cpuset.cpus")),
        "0"
    );
    assert!(eventually(Duration::from_secs(2), || allowed(&w, "x")
        .len()
        >= 3));
    assert_allowed(&w, "x", "0");
    for id in ["e1", "e2", "e3"] {
        assert_allowed(&w, id, "1");
    }
    // The node's maximum exclusive share (2/3 of 2 CPUs) is taken: a clear error, nothing left.
    let mid = snapshot(&w.root, "paddock");
    let r = w.paddock(&["create", "--bundle", s(&excl), "x2"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("io.paddock.cpu") && r.stderr.contains("maximum exclusive share"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert_no_leak(&mid, &w.root, "paddock");
    // Released to the pool and pinned again.
    w.paddock(&["update", "--cpuset-cpus", "pool", "x"]).ok();
    for id in ["x", "e1", "e3"] {
        assert_allowed(&w, id, "0-1");
    }
    w.paddock(&["update", "--cpuset-cpus", "exclusive", "x"])
        .ok();
    assert_allowed(&w, "x", "0");
    assert_allowed(&w, "e1", "1");
    let r = w.paddock(&["update", "--cpuset-cpus", "pool", "e1"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no exclusive CPUs"), "{}", r.stderr);
    // Deleting the exclusive instance gives its CPU back to everyone.
    w.paddock(&["delete", "--force", "x"]).ok();
    for id in ["e1", "e2", "e3"] {
        assert_allowed(&w, id, "0-1");
    }
    let mut left = registered(&w);
    left.sort();
    assert_eq!(left, ["e1", "e2", "e3"]);
    w.cleanup();
    assert!(registered(&w).is_empty());
    assert!(!cg("cpuset", "/t-cpu-explicit-e3").exists());
    assert_no_leak(&before, &w.root, "paddock");
}

#[test]
fn bad_cpu_values_are_clear_errors_and_leave_nothing() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let before = snapshot(&w.root, "paddock");
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, &'a str);
    let cases: &[Case] = &[
        (&[("io.paddock.cpu", "fast")], None, "io.paddock.cpu"),
        (&[("io.paddock.cpu", "exclusive:0")], None, "io.paddock.cpu"),
        (
            &[("io.paddock.cpu", "exclusive:two")],
            None,
            "io.paddock.cpu",
        ),
        (
            &[("io.paddock.cpu", "exclusive:64")],
            None,
            "maximum exclusive share",
        ),
        (&[("io.paddock.cpu", "exclusive:1")], Some("0"), "conflicts"),
        (&[("io.paddock.app.cpu", "0")], None, "io.paddock.app.cpu"),
        (
            &[("io.paddock.app.cpu", "lots")],
            None,
            "io.paddock.app.cpu",
        ),
        (&[], Some("0-x"), "linux.resources.cpu.cpus"),
    ];
    for (i, (ann, cpus, want)) in cases.iter().enumerate() {
        let ann: serde_json::Map<String, serde_json::Value> = ann
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        let b = w.annotated_bundle(
            &format!("b{i}"),
            serde_json::Value::Object(ann),
            *cpus,
            "true",
        );
        let r = w.paddock(&["create", "--bundle", s(&b), "bad"]);
        assert_ne!(r.code, 0, "case {i} accepted");
        assert!(r.stderr.contains(want), "case {i}: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
        assert!(registered(&w).is_empty(), "case {i}: {:?}", registered(&w));
    }
    // A bad list on update is refused too.
    let b = w.annotated_bundle("ok", serde_json::json!({}), None, "sleep 1000");
    run(&w, &b, "ok");
    let r = w.paddock(&["update", "--cpuset-cpus", "one", "ok"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--cpuset-cpus"), "{}", r.stderr);
    w.cleanup();
    assert_no_leak(&before, &w.root, "paddock");
}
