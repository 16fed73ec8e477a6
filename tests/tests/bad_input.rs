//! Bad input: one clear line on stderr, a non-zero exit, nothing left behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use paddock_tests::*;

const APP: &str = "t-bad";

/// Runs `args`, expects failure with one stderr line containing every `want`, and no leak.
fn refused(w: &World, args: &[&str], want: &[&str]) {
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    let r = w.paddock(args);
    assert_ne!(r.code, 0, "{args:?} succeeded");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: expected one line, got {:?}",
        r.stderr
    );
    for w in want {
        assert!(lines[0].contains(w), "{args:?}: {:?} lacks {w:?}", lines[0]);
    }
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
}

fn good_bundle(w: &World, name: &str) -> std::path::PathBuf {
    let b = w.bundle(name, &["--", "sleep", "1000"]);
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": APP})
    });
    b
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn create_refuses_bad_bundles() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let b = good_bundle(&w, "nocfg");
    std::fs::remove_file(b.join("config.json")).unwrap();
    refused(
        &w,
        &["create", "--bundle", s(&b), "x"],
        &["config.json", "missing"],
    );

    let b = good_bundle(&w, "malformed");
    std::fs::write(b.join("config.json"), "{\"ociVersion\": \"1.0.2\", ").unwrap();
    refused(
        &w,
        &["create", "--bundle", s(&b), "x"],
        &["config.json", "malformed"],
    );

    let b = good_bundle(&w, "norootfs");
    w.edit_spec(&b, |v| v["root"]["path"] = "does-not-exist".into());
    refused(
        &w,
        &["create", "--bundle", s(&b), "x"],
        &["does-not-exist", "rootfs does not exist"],
    );

    refused(
        &w,
        &["create", "--bundle", "/nonexistent-bundle", "x"],
        &["/nonexistent-bundle", "does not exist"],
    );

    let b = good_bundle(&w, "badns");
    w.edit_spec(&b, |v| {
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "bogusns"}))
    });
    refused(
        &w,
        &["create", "--bundle", s(&b), "x"],
        &["config.json", "bogusns"],
    );

    for (value, why) in [("lots", "io.paddock.pids"), ("-3", "io.paddock.pids")] {
        let b = good_bundle(&w, &format!("ann{value}"));
        w.edit_spec(&b, |v| {
            v["annotations"] = serde_json::json!({"io.paddock.app": APP, "io.paddock.pids": value})
        });
        refused(&w, &["create", "--bundle", s(&b), "x"], &[why, value]);
    }
    let b = good_bundle(&w, "annapp");
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": "../etc"})
    });
    refused(&w, &["create", "--bundle", s(&b), "x"], &["io.paddock.app"]);
    let b = good_bundle(&w, "annunknown");
    w.edit_spec(
        &b,
        |v| {
            v["annotations"] =
                serde_json::json!({"io.paddock.app": APP, "io.paddock.frobnicate": "1"})
        },
    );
    refused(
        &w,
        &["create", "--bundle", s(&b), "x"],
        &["io.paddock.frobnicate", "unknown"],
    );

    let b = good_bundle(&w, "good");
    for id in ["a/b", "..", "../x", ".hidden"] {
        refused(
            &w,
            &["create", "--bundle", s(&b), id],
            &["invalid sandbox id"],
        );
    }
}

#[test]
fn lifecycle_misuse_is_refused() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let b = good_bundle(&w, "b");
    w.paddock(&["create", "--bundle", s(&b), "dup"]).ok();
    refused(
        &w,
        &["create", "--bundle", s(&b), "dup"],
        &["dup", "already exists"],
    );
    for sig in ["SIGFOO", "0", "99", "KILLL"] {
        refused(&w, &["kill", "dup", sig], &["signal", sig]);
    }
    refused(&w, &["kill", "dup", "-9"], &["-9"]);
    w.paddock(&["start", "dup"]).ok();
    refused(&w, &["start", "dup"], &["dup", "running"]);
    refused(&w, &["delete", "dup"], &["dup", "running", "--force"]);
    refused(&w, &["state", "nosuch"], &["nosuch", "does not exist"]);
    refused(
        &w,
        &["kill", "nosuch", "KILL"],
        &["nosuch", "does not exist"],
    );
    refused(&w, &["exec", "dup"], &["command"]);
    w.paddock(&["delete", "--force", "dup"]).ok();
    refused(&w, &["start", "dup"], &["dup", "does not exist"]);
    // --force on a sandbox that is already gone is not an error (as runc).
    w.paddock(&["delete", "--force", "dup"]).ok();
}

/// Whether this process may lower OOM scores (CAP_SYS_RESOURCE in its effective set).
fn may_lower_oom_scores() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    eff & (1 << 24) != 0
}

fn oom_score_of(pid: &str) -> i32 {
    read_trimmed(Path::new(&format!("/proc/{pid}/oom_score_adj")))
        .parse()
        .unwrap()
}

#[test]
fn oom_score_adj_reaches_the_init_or_is_refused_clearly() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let own: i32 = read_trimmed(Path::new("/proc/self/oom_score_adj"))
        .parse()
        .unwrap();

    // Raising needs no privilege: the init gets it, paddock's monitor keeps paddock's score.
    let b = good_bundle(&w, "oomup");
    w.edit_spec(&b, |v| v["process"]["oomScoreAdj"] = 500.into());
    let r = w.paddock(&["create", "--bundle", s(&b), "oomup"]);
    assert_eq!(r.code, 0, "create: {}", r.stderr);
    let state: serde_json::Value =
        serde_json::from_str(&w.paddock(&["state", "oomup"]).stdout).unwrap();
    let init = state["pid"].as_i64().unwrap().to_string();
    assert_eq!(oom_score_of(&init), 500);
    let record = w.root.join(".paddock/oomup/monitor.pid");
    let monitor = read_trimmed(&record);
    let monitor = monitor.split_whitespace().next().unwrap();
    assert_eq!(
        oom_score_of(monitor),
        own,
        "the monitor must not carry the app's OOM preference"
    );
    if !may_lower_oom_scores() {
        // An exec'd process's own lower score is refused the same way.
        let process = w.path().join("oom-process.json");
        let spec = serde_json::json!({
            "args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/bin"], "oomScoreAdj": -998
        });
        std::fs::write(&process, spec.to_string()).unwrap();
        refused(
            &w,
            &["exec", "--process", s(&process), "oomup"],
            &[s(&process), "oomScoreAdj -998", "CAP_SYS_RESOURCE"],
        );
    }
    assert_eq!(w.paddock(&["delete", "--force", "oomup"]).code, 0);

    // Lowering needs CAP_SYS_RESOURCE: set with it, refused by name without it.
    let b = good_bundle(&w, "oomdown");
    w.edit_spec(&b, |v| v["process"]["oomScoreAdj"] = (-998).into());
    if may_lower_oom_scores() {
        let r = w.paddock(&["create", "--bundle", s(&b), "oomdown"]);
        assert_eq!(r.code, 0, "create: {}", r.stderr);
        let state: serde_json::Value =
            serde_json::from_str(&w.paddock(&["state", "oomdown"]).stdout).unwrap();
        assert_eq!(
            oom_score_of(&state["pid"].as_i64().unwrap().to_string()),
            -998
        );
        assert_eq!(w.paddock(&["delete", "--force", "oomdown"]).code, 0);
    } else {
        refused(
            &w,
            &["create", "--bundle", s(&b), "oomdown"],
            &[
                "config.json",
                "process.oomScoreAdj -998",
                "/proc/self/oom_score_adj",
                "CAP_SYS_RESOURCE",
            ],
        );
    }
}
