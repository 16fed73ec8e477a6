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
