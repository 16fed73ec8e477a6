//! The project-quota backend against the real kernel: the VM group (cargo feature `vm`;
//! `scripts/vm-test.sh` runs it in a Debian 12 guest, since this machine kind's kernel has no
//! project quota). Each test runs on every filesystem named in PADDOCK_QUOTA_PROJECT_STORES
//! (colon-separated directories on ext4/XFS mounted with prjquota; the guest has one of each),
//! else on an ext4 image with the quota and project features that the test makes and mounts
//! with prjquota. Without the feature the tests are ignored, and say why; with it, a
//! filesystem where project quota does not work is a failure, not a skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;

use common::*;
use paddock_quota::{
    open, probe, Backend, Error, Limits, Options, ProjectQuota, QuotaBackend, QuotaFs,
};

const ENV: &str = "PADDOCK_QUOTA_PROJECT_STORES";

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

/// A project-quota store on one filesystem: the store, the filesystem if the test made it.
struct ProjectStore {
    fs: QuotaFs,
    store: TestStore<ProjectQuota>,
    _made: Option<PrjFs>,
}

/// One project-quota store per filesystem of PADDOCK_QUOTA_PROJECT_STORES (or on a prjquota
/// ext4 image made here); panics, saying what is missing, where project quota does not work.
fn project_stores(user_quota: bool) -> Vec<ProjectStore> {
    let options = Options {
        user_quota,
        ..Options::default()
    };
    let mut bases: Vec<(PathBuf, Option<PrjFs>)> = match std::env::var(ENV) {
        Ok(list) => list
            .split(':')
            .filter(|b| !b.is_empty())
            .map(|b| (PathBuf::from(b), None))
            .collect(),
        Err(_) => {
            let made = make_prjquota_fs().unwrap_or_else(|why| {
                panic!("project quota unavailable: {why} (set {ENV} to prjquota directories)")
            });
            vec![(made.mount_point(), Some(made))]
        }
    };
    bases
        .drain(..)
        .map(|(base, made)| {
            let dir = tempfile::Builder::new()
                .prefix("paddock-quota-test-")
                .tempdir_in(&base)
                .unwrap_or_else(|e| panic!("store under {}: {e}", base.display()));
            let p = probe(dir.path(), &options).unwrap();
            let fs = p
                .project
                .unwrap_or_else(|missing| panic!("project quota unavailable: {missing}"));
            eprintln!("store {} ({fs:?})", dir.path().display());
            let backend = ProjectQuota::open(dir.path(), &options).unwrap();
            ProjectStore {
                fs,
                store: TestStore { dir, backend },
                _made: made,
            }
        })
        .collect()
}

fn limits(bytes: u64, inodes: u64) -> Limits {
    Limits::new(bytes, inodes).unwrap()
}

/// The error a write past a project limit gets: EDQUOT on ext4, ENOSPC on XFS.
fn over_quota_errno(fs: QuotaFs) -> i32 {
    match fs {
        QuotaFs::Ext4 => libc::EDQUOT,
        QuotaFs::Xfs => libc::ENOSPC,
    }
}

#[track_caller]
fn assert_over_quota(fs: QuotaFs, e: &Option<std::io::Error>) {
    assert_eq!(
        e.as_ref().and_then(|e| e.raw_os_error()),
        Some(over_quota_errno(fs)),
        "{fs:?}: {e:?}"
    );
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
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs ext4/XFS project quota: the VM group (scripts/vm-test.sh)"
)]
fn project_limits_hold_and_usage_matches() {
    for ps in project_stores(false) {
        limits_hold_and_usage_matches(ps.fs, &ps.store);
    }
}

fn limits_hold_and_usage_matches(fs_kind: QuotaFs, s: &TestStore<ProjectQuota>) {
    let b = &s.backend;
    let v = b.create("web-0", &limits(8 * MIB, 200), NOBODY).unwrap();
    assert_eq!(v.backend, Backend::Project);
    assert_eq!(v.limits, limits(8 * MIB, 200));
    let meta = fs::metadata(&v.path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (NOBODY.uid, NOBODY.gid));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    assert_eq!(leases(&s.path()).len(), 1);
    let projid: u32 = leases(&s.path())[0].parse().unwrap();
    assert_eq!(lsattr_project(&v.path), Some(projid));

    // The directory itself is in the project: one inode and (ext4) one block.
    let u0 = b.usage("web-0").unwrap();
    assert!(
        u0.inodes_used == 1 && u0.bytes_used <= 4096,
        "{fs_kind:?} {u0:?}"
    );
    assert_eq!((u0.bytes_limit, u0.inodes_limit), (8 * MIB, 200));

    let as_owner = |f: &(dyn Fn() -> (u64, Option<std::io::Error>) + Sync)| {
        run_as(&v.path, NOBODY.uid, NOBODY.gid, f)
    };
    let (n, e) = as_owner(&|| fill(Path::new("a"), 3 * MIB));
    assert!(e.is_none(), "{e:?}");
    assert_eq!(n, 3 * MIB);
    // New files inherit the project id.
    assert_eq!(lsattr_project(&v.path.join("a")), Some(projid));
    let u = b.usage("web-0").unwrap();
    // Quota charges allocated blocks: 3 MiB, plus at most an extent block.
    assert!(
        (u0.bytes_used + 3 * MIB..=u0.bytes_used + 3 * MIB + 8192).contains(&u.bytes_used),
        "{fs_kind:?} {u:?}"
    );
    assert_eq!(u.inodes_used, u0.inodes_used + 1);

    let (n, e) = as_owner(&|| fill(Path::new("big"), 16 * MIB));
    assert_over_quota(fs_kind, &e);
    assert!(3 * MIB + n <= 8 * MIB, "{n}");
    assert!(
        3 * MIB + n >= 8 * MIB - 64 * 1024,
        "{fs_kind:?} stopped early: {n}"
    );
    let u = b.usage("web-0").unwrap();
    assert!(u.bytes_used <= 8 * MIB, "{fs_kind:?} {u:?}");

    fs::remove_file(v.path.join("big")).unwrap();
    let (n, e) = as_owner(&|| {
        fs::create_dir("many").unwrap();
        make_files(Path::new("many"), 100_000)
    });
    assert_over_quota(fs_kind, &e);
    let u = b.usage("web-0").unwrap();
    assert_eq!(u.inodes_used, 200, "{fs_kind:?} {u:?}");
    assert_eq!(u0.inodes_used + 2 + n, 200);

    b.remove("web-0").unwrap();
    b.remove("web-0").unwrap();
    assert!(leases(&s.path()).is_empty());
    assert_nothing_left(&s.path(), &["web-0"]);
    // The project id is free again and its limits are gone: the next volume gets it.
    let v = b.create("web-1", &limits(MIB, 10), NOBODY).unwrap();
    assert_eq!(leases(&s.path()), [projid.to_string()]);
    let u = b.usage("web-1").unwrap();
    assert_eq!(
        (u.bytes_limit, u.inodes_limit, u.inodes_used),
        (MIB, 10, 1),
        "{u:?}"
    );
    assert!(v.path.exists());
    b.remove("web-1").unwrap();
}

/// Root keeps CAP_SYS_RESOURCE: ext4 lets it write past a project limit, XFS stops it too
/// (with ENOSPC). This is why a sandbox's pool identity must run without that capability.
#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs ext4/XFS project quota: the VM group (scripts/vm-test.sh)"
)]
fn project_limits_and_cap_sys_resource() {
    for ps in project_stores(false) {
        let b = &ps.store.backend;
        let v = b.create("root-0", &limits(2 * MIB, 100), NOBODY).unwrap();
        // This thread is root with every capability.
        let (n, e) = fill(&v.path.join("as-root"), 4 * MIB);
        match ps.fs {
            QuotaFs::Ext4 => {
                assert!(e.is_none(), "ext4 stops even CAP_SYS_RESOURCE: {e:?}");
                assert_eq!(n, 4 * MIB);
                let u = b.usage("root-0").unwrap();
                assert!(u.bytes_used >= 4 * MIB, "{u:?}");
            }
            QuotaFs::Xfs => {
                assert_over_quota(QuotaFs::Xfs, &e);
                assert!(n <= 2 * MIB, "{n}");
            }
        }
        // The owner, without capabilities, is stopped on both.
        let (_, e) = run_as(&v.path, NOBODY.uid, NOBODY.gid, || {
            fill(Path::new("as-owner"), MIB)
        });
        assert_over_quota(ps.fs, &e);
        b.remove("root-0").unwrap();
        assert_nothing_left(&ps.store.path(), &["root-0"]);
    }
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs ext4/XFS project quota: the VM group (scripts/vm-test.sh)"
)]
fn project_user_quota() {
    for ps in project_stores(true) {
        let b = &ps.store.backend;
        let v = b.create("u-0", &limits(4 * MIB, 100), NOBODY).unwrap();
        let (_, e) = run_as(&v.path, NOBODY.uid, NOBODY.gid, || {
            fill(Path::new("a"), 8 * MIB)
        });
        // The user limit (equal to the project's) is checked first: EDQUOT on XFS too, whose
        // ENOSPC is for project limits only.
        assert_eq!(
            e.as_ref().and_then(|e| e.raw_os_error()),
            Some(libc::EDQUOT),
            "{:?}: {e:?}",
            ps.fs
        );
        b.remove("u-0").unwrap();
        assert_nothing_left(&ps.store.path(), &["u-0"]);
    }
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs ext4/XFS project quota: the VM group (scripts/vm-test.sh)"
)]
fn project_remove_finishes_what_a_crash_left() {
    for ps in project_stores(false) {
        let b = &ps.store.backend;
        let store = ps.store.path();
        // State lost: the project id comes from the directory's attributes and the lease.
        b.create("nostate", &limits(MIB, 10), NOBODY).unwrap();
        let projid: u32 = leases(&store)[0].parse().unwrap();
        fs::write(store.join("volumes/nostate/file"), "x").unwrap();
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
        // The crashed volume's project carries no limits and no usage any more: the id is
        // handed out again.
        b.create("again", &limits(MIB, 10), NOBODY).unwrap();
        assert_eq!(leases(&store), [projid.to_string()]);
        b.remove("again").unwrap();
    }
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs ext4/XFS project quota: the VM group (scripts/vm-test.sh)"
)]
fn project_parallel_creates_get_distinct_ids() {
    for ps in project_stores(false) {
        let b = &ps.store.backend;
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
        assert_eq!(leases(&ps.store.path()).len(), 8);
        for id in &ids {
            b.remove(id).unwrap();
        }
        assert!(leases(&ps.store.path()).is_empty());
    }
}

/// The project id `lsattr -p` shows on `path`.
fn lsattr_project(path: &Path) -> Option<u32> {
    let out = Command::new("lsattr")
        .args(["-d", "-p"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
