//! Disk quota on the sandbox's writable volume (`io.paddock.disk`), loop-image backend end to
//! end: writes past the limit fail inside the sandbox, usage is reported, delete leaves no loop
//! device, mount or image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use paddock_tests::*;

const APP: &str = "t-quota";
const MIB: u64 = 1 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn bundle(w: &World, name: &str, ann: serde_json::Value, script: &str) -> std::path::PathBuf {
    let b = w.bundle(name, &["--", "sh", "-c", script]);
    w.edit_spec(&b, |v| v["annotations"] = ann);
    b
}

/// Loop devices whose backing file is under this world's quota store, and mounts there.
fn quota_leftovers(w: &World) -> Vec<String> {
    let store = w.path().join("quota");
    let store = store.to_string_lossy().into_owned();
    let mut out: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&store))
        .map(|l| format!("mount {l}"))
        .collect();
    if let Ok(entries) = std::fs::read_dir("/sys/block") {
        for e in entries.flatten() {
            let f = e.path().join("loop/backing_file");
            if let Ok(b) = std::fs::read_to_string(f) {
                if b.contains(&store) {
                    out.push(format!("loop {}", b.trim()));
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(w.path().join("quota/images")) {
        out.extend(
            entries
                .flatten()
                .map(|e| format!("image {}", e.path().display())),
        );
    }
    out
}

fn stats(w: &World, id: &str) -> serde_json::Value {
    serde_json::from_str(&w.paddock(&["events", "--stats", id]).ok().stdout).unwrap()
}

#[test]
fn writes_past_the_limit_fail_and_usage_is_reported() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let ann = serde_json::json!({"io.paddock.app": APP, "io.paddock.disk": "8M"});
    let script =
        "dd if=/dev/zero of=/home/vcap/three bs=1M count=3 2>/dev/null; echo wrote=$?; sleep 1000";
    let b = bundle(&w, "b", ann, script);
    w.paddock(&["run", "-d", "--bundle", s(&b), "q1"]).ok();
    assert!(eventually(std::time::Duration::from_secs(5), || {
        stats(&w, "q1")["data"]["disk"]["usage"]
            .as_u64()
            .unwrap_or(0)
            >= 3 * MIB
    }));
    let disk = stats(&w, "q1")["data"]["disk"].clone();
    assert_eq!(disk["limit"], 8 * MIB, "{disk}");
    let used = disk["usage"].as_u64().unwrap();
    // The 3 MiB file plus a directory block and an extent block at most.
    assert!(
        (3 * MIB..3 * MIB + 64 * 1024).contains(&used),
        "usage {used}"
    );
    let r = w.paddock(&[
        "exec",
        "q1",
        "sh",
        "-c",
        "dd if=/dev/zero of=/home/vcap/big bs=1M count=20 2>&1; echo rc=$?",
    ]);
    assert!(r.stdout.contains("No space left on device"), "{}", r.stdout);
    assert!(!r.stdout.contains("rc=0"), "{}", r.stdout);
    // The host's filesystem saw none of it beyond the limit.
    let used = stats(&w, "q1")["data"]["disk"]["usage"].as_u64().unwrap();
    assert!(used <= 8 * MIB, "usage {used} past the limit");
    assert!(
        !quota_leftovers(&w).is_empty(),
        "the volume should exist while the sandbox does"
    );
    w.paddock(&["delete", "--force", "q1"]).ok();
    assert_eq!(quota_leftovers(&w), Vec::<String>::new());
}

#[test]
fn the_inode_limit_holds() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let ann = serde_json::json!({
        "io.paddock.app": APP, "io.paddock.disk": "8M", "io.paddock.disk.inodes": "100",
        "io.paddock.disk.path": "/data"
    });
    let script =
        "i=0; while [ $i -lt 300 ]; do touch /data/f$i 2>/dev/null || break; i=$((i+1)); done; \
                  echo made=$i; touch /data/one-more 2>&1";
    let b = bundle(&w, "b", ann, script);
    let r = w.paddock(&["run", "--bundle", s(&b), "q2"]);
    let made: u64 = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("made="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        (90..=130).contains(&made),
        "files made under a 100-inode limit: {made}: {}",
        r.stdout
    );
    assert!(r.stdout.contains("No space left on device"), "{}", r.stdout);
    assert_eq!(quota_leftovers(&w), Vec::<String>::new());
}

#[test]
fn bad_sizes_are_refused_and_leave_nothing() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    for (key, value, want) in [
        ("io.paddock.disk", "-1", "io.paddock.disk"),
        ("io.paddock.disk", "1Q", "io.paddock.disk"),
        ("io.paddock.disk", "0", "io.paddock.disk"),
        ("io.paddock.disk", "900T", "900"),
        ("io.paddock.disk.inodes", "lots", "io.paddock.disk.inodes"),
    ] {
        let mut ann = serde_json::json!({"io.paddock.app": APP, "io.paddock.disk": "8M"});
        ann[key] = value.into();
        let b = bundle(&w, &format!("b{value}"), ann, "true");
        let r = w.paddock(&["create", "--bundle", s(&b), "bad"]);
        assert_ne!(r.code, 0, "{key}={value} accepted");
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains(want), "{key}={value}: {}", r.stderr);
    }
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
    assert_eq!(quota_leftovers(&w), Vec::<String>::new());
}

#[test]
fn delete_force_finishes_after_a_crash() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let ann = serde_json::json!({"io.paddock.app": APP, "io.paddock.disk": "4M"});
    let b = bundle(&w, "b", ann, "sleep 1000");
    w.paddock(&["run", "-d", "--bundle", s(&b), "q3"]).ok();
    // As if paddock died half-way through a delete: the engine's state is gone, paddock's
    // record and the volume remain.
    std::fs::remove_dir_all(w.root.join("q3")).unwrap();
    assert!(!quota_leftovers(&w).is_empty());
    w.paddock(&["delete", "--force", "q3"]).ok();
    assert_eq!(quota_leftovers(&w), Vec::<String>::new());
    assert_ne!(w.paddock(&["state", "q3"]).code, 0);
}
