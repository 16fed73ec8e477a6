//! Seccomp: the spec's profile is honoured, a spec without one gets paddock's default, exec'd
//! processes are filtered too, and a bad profile is a clear error at create. Kernel paths: a
//! spec that names no masked or read-only paths gets paddock's defaults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use paddock_tests::*;

const APP: &str = "t-seccomp";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `unshare -U` needs no capability, so only a seccomp filter can refuse it; a control run
/// with an allow-all profile shows it is the filter.
#[test]
fn default_profile_refuses_escapes_and_allows_work() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let script = "unshare -U true 2>&1; echo unshare=$?; \
                  echo work > /tmp/f && cat /tmp/f; sh -c 'exit 0' && echo fork=ok";
    let run = |name: &str, profile: Option<serde_json::Value>| {
        let b = w.bundle(name, &["--", "sh", "-c", script]);
        w.edit_spec(&b, |v| {
            v["annotations"] = serde_json::json!({"io.paddock.app": APP});
            if let Some(p) = profile {
                v["linux"]["seccomp"] = p;
            }
        });
        let r = w.paddock(&["run", "--bundle", s(&b), name]);
        assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
        r.stdout
    };
    let out = run("def", None);
    assert!(
        out.contains("unshare=1"),
        "default profile let unshare(CLONE_NEWUSER) through: {out}"
    );
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("work\n") && out.contains("fork=ok"), "{out}");
    let control = run(
        "allow",
        Some(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"})),
    );
    assert!(
        control.contains("unshare=0"),
        "control without the default profile: {control}"
    );
}

#[test]
fn spec_profile_is_honoured_also_for_exec() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let b = w.bundle("b", &["--", "sleep", "1000"]);
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": APP});
        v["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
        });
    });
    w.paddock(&["run", "-d", "--bundle", s(&b), "prof"]).ok();
    let r = w.paddock(&["exec", "prof", "sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?"]);
    assert!(
        r.stdout.contains("Permission denied"),
        "errnoRet 13 = EACCES: {}",
        r.stdout
    );
    let r = w.paddock(&["exec", "prof", "sh", "-c", "echo ok > /tmp/y && cat /tmp/y"]);
    assert_eq!(r.stdout, "ok\n");
    w.paddock(&["delete", "--force", "prof"]).ok();
}

#[test]
fn bad_profiles_are_refused_at_create() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    for (name, profile, want) in [
        (
            "unknown",
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["frobnicate"], "action": "SCMP_ACT_ERRNO"}]}),
            "frobnicate",
        ),
        (
            "action",
            serde_json::json!({"defaultAction": "SCMP_ACT_EXPLODE"}),
            "SCMP_ACT_EXPLODE",
        ),
    ] {
        let b = w.bundle(name, &["--", "true"]);
        w.edit_spec(&b, |v| {
            v["annotations"] = serde_json::json!({"io.paddock.app": APP});
            v["linux"]["seccomp"] = profile;
        });
        let r = w.paddock(&["create", "--bundle", s(&b), name]);
        assert_ne!(r.code, 0);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains(want), "{}", r.stderr);
    }
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
}

#[test]
fn kernel_paths_are_masked_and_read_only_by_default() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let script = "wc -c < /proc/interrupts; ls /sys/firmware | wc -l; \
                  echo 1 > /proc/sys/kernel/ns_last_pid 2>&1; echo sys=$?; \
                  echo h > /proc/sysrq-trigger 2>&1; echo sysrq=$?";
    let b = w.bundle("b", &["--", "sh", "-c", script]);
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": APP});
        let linux = v["linux"].as_object_mut().unwrap();
        linux.remove("maskedPaths");
        linux.remove("readonlyPaths");
        let caps = serde_json::json!(["CAP_SYS_ADMIN", "CAP_KILL"]);
        for set in ["bounding", "effective", "permitted"] {
            v["process"]["capabilities"][set] = caps.clone();
        }
    });
    let r = w.paddock(&["run", "--bundle", s(&b), "paths"]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0].trim(),
        "0",
        "/proc/interrupts is masked: {}",
        r.stdout
    );
    assert_eq!(
        lines[1].trim(),
        "0",
        "/sys/firmware is masked: {}",
        r.stdout
    );
    // As root with CAP_SYS_ADMIN, only the read-only mounts stand in the way of these writes.
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    assert!(
        r.stdout.contains("sys=1") && r.stdout.contains("sysrq=1"),
        "{}",
        r.stdout
    );
}
