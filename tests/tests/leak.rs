//! 300 create/start/kill/delete cycles leave the host exactly as before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use paddock_tests::*;

const CYCLES: usize = 300;

#[test]
fn three_hundred_cycles_leave_nothing() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let b = w.bundle(
        "b",
        &[
            "--memory", "67108864", "--pids", "32", "--", "sleep", "1000",
        ],
    );
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": "t-leak"});
    });
    let bundle = b.to_str().unwrap();
    let cycle = |i: usize| {
        let id = format!("leak-{}", i % 7);
        w.paddock(&["create", "--bundle", bundle, &id]).ok();
        w.paddock(&["start", &id]).ok();
        w.paddock(&["kill", &id, "KILL"]).ok();
        w.wait_status(&id, "stopped");
        w.paddock(&["delete", &id]).ok();
    };
    // One warm-up cycle: the node's `/paddock` cgroup root and the state root stay by design.
    cycle(0);
    let before = snapshot(&w.root, "paddock");
    for i in 0..CYCLES {
        cycle(i);
    }
    assert_no_leak(&before, &w.root, "paddock");
}
