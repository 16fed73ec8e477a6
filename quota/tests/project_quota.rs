//! The project-quota backend against the real kernel. Runs where project quota works: on the
//! filesystem named by PADDOCK_QUOTA_PROJECT_STORE (a directory on ext4/XFS mounted with
//! prjquota), else on an ext4 image with the quota and project features that the test makes
//! and mounts with prjquota. Where neither works (this machine kind: no QFMT_V2, no XFS
//! quota) each test prints what the probe and the mount said and returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;

use common::*;
use paddock_quota::{open, probe, Backend, Error, Limits, Options, ProjectQuota, QuotaBackend};

const ENV: &str = "PADDOCK_QUOTA_PROJECT_STORE";

/// A prjquota-mounted ext4 image made for the test; Drop unmounts it and frees the device.
struct PrjFs {
    dir: tempfile::TempDir,
    device: String,
}

impl PrjFs {
    fn mount_point(&self) -> PathBuf {
        self.dir.path().join("fs")
    }
}

impl Drop for PrjFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mount_point(), nix::mount::MntFlags::MNT_DETACH);
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        force_clean(self.dir.path());
    }
}

/// Runs a command; its stdout, or one line saying how it failed.
fn run(cmd: &mut Command) -> Result<String, String> {
    let name = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("{name}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Makes an ext4 image with project (and user) quota and mounts it with prjquota,usrquota.
fn make_prjquota_fs() -> Result<PrjFs, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("making a prjquota test filesystem needs root".into());
    }
    let dir = temp_store_dir();
    let image = dir.path().join("prj.img");
    fs::File::create(&image)
        .and_then(|f| f.set_len(64 * MIB))
        .map_err(|e| e.to_string())?;
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-O",
            "quota,project",
            "-E",
            "quotatype=usrquota:prjquota",
        ])
        .arg(&image))?;
    let device = run(Command::new("losetup").args(["-f", "--show"]).arg(&image))?;
    let fs = PrjFs { device, dir };
    fs::create_dir(fs.mount_point()).map_err(|e| e.to_string())?;
    nix::mount::mount(
        Some(fs.device.as_str()),
        &fs.mount_point(),
        Some("ext4"),
        nix::mount::MsFlags::empty(),
        Some("prjquota,usrquota"),
    )
    .map_err(|e| {
        format!(
            "the kernel refuses to mount an ext4 image with the project feature with \
             prjquota: {e}"
        )
    })?;
    Ok(fs)
}

/// A project-quota store, its backing filesystem if the test made one, and whether user
/// quota works there; None (reason printed) where project quota cannot work.
fn project_store(user_quota: bool) -> Option<(Option<PrjFs>, TestStore<ProjectQuota>)> {
    let options = Options {
        user_quota,
        ..Options::default()
    };
    let (fs, dir) = match std::env::var_os(ENV) {
        Some(base) => {
            let dir = tempfile::Builder::new()
                .prefix("paddock-quota-test-")
                .tempdir_in(base)
                .unwrap();
            (None, dir)
        }
        None => {
            let plain = temp_store_dir();
            let p = probe(plain.path(), &options).unwrap();
            match p.project {
                Ok(_) => (None, plain),
                Err(here) => match make_prjquota_fs() {
                    Ok(fs) => {
                        let dir = tempfile::Builder::new()
                            .prefix("paddock-quota-test-")
                            .tempdir_in(fs.mount_point())
                            .unwrap();
                        (Some(fs), dir)
                    }
                    Err(why) => {
                        eprintln!(
                            "skipped: project quota unavailable: {here}; and {why} \
                             (set {ENV} to a directory on a prjquota filesystem)"
                        );
                        return None;
                    }
                },
            }
        }
    };
    let p = probe(dir.path(), &options).unwrap();
    if let Err(missing) = &p.project {
        eprintln!("skipped: project quota unavailable: {missing}");
        return None;
    }
    let backend = ProjectQuota::open(dir.path(), &options).unwrap();
    Some((fs, TestStore { dir, backend }))
}

fn limits(bytes: u64, inodes: u64) -> Limits {
    Limits::new(bytes, inodes).unwrap()
}

/// EDQUOT on ext4; XFS says ENOSPC for project quota.
fn over_quota(e: &Option<std::io::Error>) -> bool {
    matches!(
        e.as_ref().and_then(|e| e.raw_os_error()),
        Some(libc::EDQUOT) | Some(libc::ENOSPC)
    )
}

fn leases(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.join("projects"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

#[test]
fn forcing_project_quota_where_it_does_not_work_says_why() {
    let dir = temp_store_dir();
    let p = probe(dir.path(), &Options::default()).unwrap();
    eprintln!("{p}");
    match &p.project {
        Err(missing) => {
            let e = open(dir.path(), Some(Backend::Project), &Options::default()).unwrap_err();
            assert!(matches!(e, Error::Unsupported { .. }), "{e}");
            assert!(e.to_string().contains(&missing.to_string()), "{e}");
        }
        Ok(_) => eprintln!("skipped: project quota works on {}", dir.path().display()),
    }
}

#[test]
fn project_limits_hold_and_usage_matches() {
    let Some((_fs, s)) = project_store(false) else {
        return;
    };
    let b = &s.backend;
    let v = b.create("web-0", &limits(8 * MIB, 200), NOBODY).unwrap();
    assert_eq!(v.backend, Backend::Project);
    assert_eq!(v.limits, limits(8 * MIB, 200));
    let meta = fs::metadata(&v.path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (NOBODY.uid, NOBODY.gid));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    assert_eq!(leases(&s.path()).len(), 1);

    // The directory itself is in the project: one inode and (ext4) one block.
    let u0 = b.usage("web-0").unwrap();
    assert!(u0.inodes_used <= 1 && u0.bytes_used <= 4096, "{u0:?}");

    let as_owner = |f: &(dyn Fn() -> (u64, Option<std::io::Error>) + Sync)| {
        run_as(&v.path, NOBODY.uid, NOBODY.gid, f)
    };
    let (n, e) = as_owner(&|| fill(Path::new("a"), 3 * MIB));
    assert!(e.is_none(), "{e:?}");
    assert_eq!(n, 3 * MIB);
    let u = b.usage("web-0").unwrap();
    // Quota charges allocated blocks: 3 MiB, plus at most an extent block.
    assert!(
        (u0.bytes_used + 3 * MIB..=u0.bytes_used + 3 * MIB + 8192).contains(&u.bytes_used),
        "{u:?}"
    );
    assert_eq!(u.inodes_used, u0.inodes_used + 1);

    let (n, e) = as_owner(&|| fill(Path::new("big"), 16 * MIB));
    assert!(over_quota(&e), "{e:?}");
    assert!(3 * MIB + n <= 8 * MIB, "{n}");
    assert!(3 * MIB + n >= 8 * MIB - 64 * 1024, "{n}");

    fs::remove_file(v.path.join("big")).unwrap();
    let (n, e) = as_owner(&|| {
        fs::create_dir("many").unwrap();
        make_files(Path::new("many"), 100_000)
    });
    assert!(over_quota(&e), "{e:?}");
    let u = b.usage("web-0").unwrap();
    assert_eq!(u.inodes_used, 200, "{u:?}");
    assert_eq!(u0.inodes_used + 2 + n, 200);

    b.remove("web-0").unwrap();
    b.remove("web-0").unwrap();
    assert!(leases(&s.path()).is_empty());
    assert_nothing_left(&s.path(), &["web-0"]);
    // The project id is free again and its limits are gone: the next volume gets it.
    b.create("web-1", &limits(MIB, 10), NOBODY).unwrap();
    assert_eq!(leases(&s.path()).len(), 1);
    b.remove("web-1").unwrap();
}

#[test]
fn project_user_quota() {
    let Some((_fs, s)) = project_store(true) else {
        return;
    };
    let b = &s.backend;
    let v = b.create("u-0", &limits(4 * MIB, 100), NOBODY).unwrap();
    let (_, e) = run_as(&v.path, NOBODY.uid, NOBODY.gid, || {
        fill(Path::new("a"), 8 * MIB)
    });
    assert!(over_quota(&e), "{e:?}");
    b.remove("u-0").unwrap();
    assert_nothing_left(&s.path(), &["u-0"]);
}

#[test]
fn project_remove_finishes_what_a_crash_left() {
    let Some((_fs, s)) = project_store(false) else {
        return;
    };
    let b = &s.backend;
    let store = s.path();
    // State lost: the project id comes from the directory's attributes and the lease.
    b.create("nostate", &limits(MIB, 10), NOBODY).unwrap();
    fs::remove_file(store.join("state/nostate.json")).unwrap();
    // A create that died right after leasing its project id.
    fs::write(store.join("projects/3000000"), "leased").unwrap();
    assert_eq!(b.list().unwrap(), ["leased", "nostate"]);
    for id in ["nostate", "leased"] {
        b.remove(id).unwrap();
        b.remove(id).unwrap();
    }
    assert!(leases(&store).is_empty());
    assert_nothing_left(&store, &["nostate", "leased"]);
}

#[test]
fn project_parallel_creates_get_distinct_ids() {
    let Some((_fs, s)) = project_store(false) else {
        return;
    };
    let b = &s.backend;
    let ids: Vec<String> = (0..8).map(|i| format!("par-{i}")).collect();
    let barrier = Barrier::new(ids.len());
    std::thread::scope(|sc| {
        for id in &ids {
            let barrier = &barrier;
            sc.spawn(move || {
                barrier.wait();
                b.create(id, &limits(MIB, 10), NOBODY).unwrap();
            });
        }
    });
    assert_eq!(leases(&s.path()).len(), 8);
    for id in &ids {
        b.remove(id).unwrap();
    }
    assert!(leases(&s.path()).is_empty());
}
