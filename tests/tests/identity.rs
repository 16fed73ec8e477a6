//! Per-instance host identity: each sandbox runs as a uid/gid leased from the node's pool,
//! unique among live sandboxes and returned on delete.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use paddock_tests::*;

const APP: &str = "t-identity";
const BASE: u32 = 2_050_000_000;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn leases(w: &World) -> usize {
    std::fs::read_dir(w.path().join("leases"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_sandbox_runs_as_its_leased_identity() {
    if !require_root() {
        return;
    }
    let w = World::new();
    w.set_pool(BASE, 16);
    let b = w.bundle("b", &["--", "sh", "-c", "id -u; id -g; id -G; sleep 1000"]);
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": APP})
    });
    w.paddock(&["create", "--bundle", s(&b), "i1"]).ok();
    let st = w.state("i1");
    let uid = st["identity"]["uid"].as_u64().unwrap() as u32;
    assert!((BASE..BASE + 16).contains(&uid), "{st}");
    assert!(leases(&w) > 0, "no lease file while the sandbox lives");
    let run = w.paddock(&["start", "i1"]);
    run.ok();
    let pid = st["pid"].as_i64().unwrap() as i32;
    // ps shows the sandbox's processes running as its identity.
    assert!(eventually(std::time::Duration::from_secs(5), || {
        let table = w.paddock(&["ps", "i1", "-eo", "pid,uid"]).stdout;
        table.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&pid.to_string().as_str())
                && f.get(1) == Some(&uid.to_string().as_str())
        })
    }));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(
        uids.split_whitespace()
            .skip(1)
            .all(|u| u == uid.to_string()),
        "{uids}"
    );
    let out = w.paddock(&["exec", "i1", "id", "-u"]);
    assert_eq!(
        out.stdout.trim(),
        uid.to_string(),
        "exec runs as the identity too"
    );
    w.paddock(&["delete", "--force", "i1"]).ok();
    assert_eq!(leases(&w), 0, "lease not returned");
}

#[test]
fn an_exhausted_pool_is_a_clear_error_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let w = World::new();
    w.set_pool(BASE, 2);
    let b = w.bundle("b", &["--", "sleep", "1000"]);
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": APP})
    });
    w.paddock(&["create", "--bundle", s(&b), "e1"]).ok();
    w.paddock(&["create", "--bundle", s(&b), "e2"]).ok();
    let uids: BTreeSet<u64> = ["e1", "e2"]
        .iter()
        .map(|id| w.state(id)["identity"]["uid"].as_u64().unwrap())
        .collect();
    assert_eq!(uids.len(), 2);
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    let r = w.paddock(&["create", "--bundle", s(&b), "e3"]);
    assert_ne!(r.code, 0);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("exhausted"), "{}", r.stderr);
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
    w.paddock(&["delete", "--force", "e1"]).ok();
    // A freed id is leased again.
    w.paddock(&["create", "--bundle", s(&b), "e3"]).ok();
    w.paddock(&["delete", "--force", "e2"]).ok();
    w.paddock(&["delete", "--force", "e3"]).ok();
    assert_eq!(leases(&w), 0);
}

#[test]
fn two_hundred_concurrent_creates_never_share_a_uid() {
    if !require_root() {
        return;
    }
    let w = World::new();
    w.set_pool(BASE, 1000);
    let b = w.bundle("b", &["--", "sleep", "1000"]);
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": APP})
    });
    let ids: Vec<String> = (0..200).map(|i| format!("c{i}")).collect();
    let mut children: Vec<_> = ids
        .iter()
        .map(|id| {
            Command::new(paddock_bin())
                .env("PADDOCK_CONFIG", w.path().join("config.toml"))
                .arg("--root")
                .arg(&w.root)
                .args(["create", "--bundle", s(&b), id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let failed = children
        .iter_mut()
        .map(|c| c.wait().map(|s| s.success()).unwrap_or(false))
        .filter(|ok| !ok)
        .count();
    assert_eq!(failed, 0, "creates failed");
    let uids: BTreeSet<u64> = ids
        .iter()
        .map(|id| w.state(id)["identity"]["uid"].as_u64().unwrap())
        .collect();
    assert_eq!(uids.len(), ids.len(), "a uid was leased twice");
    for id in &ids {
        w.paddock(&["delete", "--force", id]).ok();
    }
    assert_eq!(leases(&w), 0);
}

#[test]
fn a_bad_user_annotation_is_refused() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let b = w.bundle("b", &["--", "true"]);
    w.edit_spec(
        &b,
        |v| {
            v["annotations"] = serde_json::json!({"io.paddock.app": APP, "io.paddock.user": "root"})
        },
    );
    let r = w.paddock(&["create", "--bundle", s(&b), "bad"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("io.paddock.user"), "{}", r.stderr);
}
