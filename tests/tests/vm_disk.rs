//! Disk quota with the project-quota backend, end to end through `paddock`: the VM group
//! (cargo feature `vm`; `scripts/vm-test.sh` runs it in a guest with ext4 and XFS mounted with
//! prjquota, named by PADDOCK_QUOTA_PROJECT_STORES). The sandbox's pool identity has no
//! CAP_SYS_RESOURCE, so ext4 stops it with EDQUOT; XFS says ENOSPC. A writable rootfs on such
//! a filesystem is under the quota too. Without the feature these tests are ignored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use paddock_tests::*;

const MIB: u64 = 1 << 20;

/// The prjquota filesystems of the guest: (directory, "ext4" | "xfs").
fn quota_filesystems() -> Vec<(PathBuf, String)> {
    assert!(require_root(), "the VM group runs as root");
    let list = std::env::var("PADDOCK_QUOTA_PROJECT_STORES").unwrap_or_else(|_| {
        panic!("PADDOCK_QUOTA_PROJECT_STORES is not set: run the VM group (scripts/vm-test.sh)")
    });
    list.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| {
            let out = sh(&format!("stat -f -c %T {d}"));
            let kind = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert!(kind == "ext2/ext3" || kind == "xfs", "{d} is {kind}");
            let kind = if kind == "xfs" { "xfs" } else { "ext4" };
            (PathBuf::from(d), kind.to_string())
        })
        .collect()
}

/// The message a write past the limit gets inside the sandbox.
fn over_quota_message(kind: &str) -> &'static str {
    if kind == "xfs" {
        "No space left on device"
    } else {
        "Disk quota exceeded"
    }
}

/// A world whose quota store is a fresh directory on `base`, forced to project quota.
fn world_on(base: &Path) -> (World, tempfile::TempDir) {
    let w = World::new();
    let store = tempfile::Builder::new()
        .prefix("paddock-store-")
        .tempdir_in(base)
        .unwrap();
    fs::write(
        w.path().join("config.toml"),
        format!(
            "[quota]\nstore = \"{}\"\nbackend = \"project\"\n",
            store.path().display()
        ),
    )
    .unwrap();
    (w, store)
}

fn stats(w: &World, id: &str) -> serde_json::Value {
    serde_json::from_str(&w.paddock(&["events", "--stats", id]).ok().stdout).unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// The project id `lsattr -p` shows on `path`.
fn project_of(path: &Path) -> u32 {
    let out = Command::new("lsattr")
        .args(["-d", "-p"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("lsattr -p {}: {out:?}", path.display()))
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs ext4/XFS project quota: the VM group (scripts/vm-test.sh)"
)]
fn the_volume_is_a_project_and_its_limits_hold_inside() {
    for (base, kind) in quota_filesystems() {
        let (w, store) = world_on(&base);
        let app = "t-prj";
        let before = snapshot(&w.root, &format!("paddock/{app}"));
        let b = w.bundle("b", &["--", "sleep", "1000"]);
        w.edit_spec(&b, |v| {
            v["annotations"] = serde_json::json!({
                "io.paddock.app": app, "io.paddock.disk": "8M", "io.paddock.disk.inodes": "100"
            })
        });
        w.paddock(&["run", "-d", "--bundle", b.to_str().unwrap(), "p1"])
            .ok();
        let volumes = store.path().join("volumes");
        assert_eq!(entries(&volumes).len(), 1, "{kind}: one project directory");
        assert_eq!(entries(&store.path().join("projects")).len(), 1);
        let vol = volumes.join(&entries(&volumes)[0]);
        let projid: u32 = entries(&store.path().join("projects"))[0].parse().unwrap();
        assert_eq!(project_of(&vol), projid, "{kind}");

        let r = w.paddock(&[
            "exec",
            "p1",
            "sh",
            "-c",
            "dd if=/dev/zero of=/home/vcap/three bs=1M count=3 2>&1 && sync; echo rc=$?",
        ]);
        assert!(r.stdout.contains("rc=0"), "{kind}: {}", r.stdout);
        let disk = stats(&w, "p1")["data"]["disk"].clone();
        assert_eq!(disk["limit"], 8 * MIB, "{kind}: {disk}");
        assert_eq!(disk["inodesLimit"], 100, "{kind}: {disk}");
        let used = disk["usage"].as_u64().unwrap();
        assert!(
            (3 * MIB..3 * MIB + 64 * 1024).contains(&used),
            "{kind}: usage {used}"
        );
        assert_eq!(disk["inodes"], 2, "{kind}: the root and one file: {disk}");
        assert_eq!(project_of(&vol.join("three")), projid, "{kind}: inherited");

        // Past the limit, as the pool identity (no CAP_SYS_RESOURCE).
        let r = w.paddock(&[
            "exec",
            "p1",
            "sh",
            "-c",
            "dd if=/dev/zero of=/home/vcap/big bs=1M count=20 2>&1; echo rc=$?",
        ]);
        assert!(
            r.stdout.contains(over_quota_message(&kind)),
            "{kind}: {}",
            r.stdout
        );
        assert!(!r.stdout.contains("rc=0"), "{kind}: {}", r.stdout);
        let used = stats(&w, "p1")["data"]["disk"]["usage"].as_u64().unwrap();
        assert!(used <= 8 * MIB, "{kind}: usage {used} past the limit");

        // Inodes: 100 in all, the root and one file already there.
        let r = w.paddock(&[
            "exec",
            "p1",
            "sh",
            "-c",
            "rm -f /home/vcap/big; i=0; while [ $i -lt 300 ]; do \
             touch /home/vcap/f$i 2>/dev/null || break; i=$((i+1)); done; echo made=$i; \
             touch /home/vcap/one-more 2>&1",
        ]);
        assert!(r.stdout.contains("made=98"), "{kind}: {}", r.stdout);
        assert!(
            r.stdout.contains(over_quota_message(&kind)),
            "{kind}: {}",
            r.stdout
        );
        assert_eq!(stats(&w, "p1")["data"]["disk"]["inodes"], 100);

        w.paddock(&["delete", "--force", "p1"]).ok();
        assert!(entries(&volumes).is_empty(), "{kind}: volume left");
        assert!(
            entries(&store.path().join("projects")).is_empty(),
            "{kind}: lease left"
        );
        assert!(
            entries(&store.path().join("state")).is_empty(),
            "{kind}: state left"
        );
        assert_no_leak(&before, &w.root, &format!("paddock/{app}"));
    }
}

/// `io.paddock.disk` also limits a writable rootfs on a prjquota filesystem: what it holds
/// plus the same allowance; the tree goes back to project 0 at delete. A read-only rootfs
/// there is left alone.
#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs ext4/XFS project quota: the VM group (scripts/vm-test.sh)"
)]
fn a_writable_rootfs_on_a_quota_filesystem_is_under_the_quota_too() {
    for (base, kind) in quota_filesystems() {
        let (w, store) = world_on(&base);
        let app = "t-rootfs";
        let before = snapshot(&w.root, &format!("paddock/{app}"));
        let bundles = tempfile::Builder::new()
            .prefix("paddock-bundles-")
            .tempdir_in(&base)
            .unwrap();
        let make = |name: &str, writable: bool| {
            let dir = bundles.path().join(name);
            let out = Command::new(workspace().join("scripts/mkbundle.sh"))
                .arg(&dir)
                .args(["--", "sleep", "1000"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            w.edit_spec(&dir, |v| {
                v["annotations"] =
                    serde_json::json!({"io.paddock.app": app, "io.paddock.disk": "4M"});
                v["root"]["readonly"] = serde_json::json!(!writable);
                // /tmp is the rootfs's own directory (mode 1777), not a tmpfs.
                v["mounts"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|m| m["destination"] != "/tmp");
            });
            dir
        };
        let rw = make("rw", true);
        let ro = make("ro", false);
        w.paddock(&["run", "-d", "--bundle", rw.to_str().unwrap(), "r1"])
            .ok();
        w.paddock(&["run", "-d", "--bundle", ro.to_str().unwrap(), "r2"])
            .ok();

        let rootfs = rw.join("rootfs");
        let projid = project_of(&rootfs);
        assert_ne!(projid, 0, "{kind}: the writable rootfs has no project");
        assert_eq!(project_of(&rootfs.join("bin")), projid);
        assert_eq!(
            project_of(&ro.join("rootfs")),
            0,
            "{kind}: read-only rootfs touched"
        );
        let s1 = stats(&w, "r1")["data"].clone();
        let root_disk = &s1["rootfsDisk"];
        let held = root_disk["usage"].as_u64().unwrap();
        let limit = root_disk["limit"].as_u64().unwrap();
        assert!(held > 0, "{kind}: {s1}");
        // The engine's mount points may have added a block or two since the attach.
        assert!(
            (held + 4 * MIB - 64 * 1024..=held + 4 * MIB + 8192).contains(&limit),
            "{kind}: limit {limit} for {held} held: {s1}"
        );
        assert!(stats(&w, "r2")["data"].get("rootfsDisk").is_none());

        let r = w.paddock(&[
            "exec",
            "r1",
            "sh",
            "-c",
            "dd if=/dev/zero of=/tmp/big bs=1M count=20 2>&1; echo rc=$?",
        ]);
        assert!(
            r.stdout.contains(over_quota_message(&kind)),
            "{kind}: {}",
            r.stdout
        );
        assert!(!r.stdout.contains("rc=0"), "{kind}: {}", r.stdout);
        let big = fs::metadata(rootfs.join("tmp/big")).unwrap().len();
        assert!(
            big <= 4 * MIB,
            "{kind}: {big} bytes written past the allowance"
        );
        assert_eq!(
            project_of(&rootfs.join("tmp/big")),
            projid,
            "{kind}: inherited"
        );

        w.paddock(&["delete", "--force", "r1"]).ok();
        w.paddock(&["delete", "--force", "r2"]).ok();
        // The tree is the caller's again, out of any project; the lease is gone.
        assert_eq!(project_of(&rootfs), 0, "{kind}");
        assert_eq!(project_of(&rootfs.join("tmp/big")), 0, "{kind}");
        assert!(
            entries(&store.path().join("projects")).is_empty(),
            "{kind}: lease left"
        );
        assert_no_leak(&before, &w.root, &format!("paddock/{app}"));
    }
}
