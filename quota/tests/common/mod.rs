//! Shared fixtures of the quota crate's real tests: temporary stores with "paddock" in their
//! path (so that leaks show up in `losetup -a` and mountinfo), cleanup guards that run even
//! when a test panics, a leak check, and writing as the volume's owner.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use paddock_quota::{loop_device, mountinfo, probe, Options, QuotaBackend};

/// The owner of test volumes: nobody, so that writes are an unprivileged user's.
pub const NOBODY: paddock_quota::Owner = paddock_quota::Owner {
    uid: 65534,
    gid: 65534,
};

pub const MIB: u64 = 1 << 20;

/// A temporary store and the backend on it; Drop removes every volume, then whatever is still
/// mounted or bound below it, then the directory.
pub struct TestStore<B: QuotaBackend> {
    pub dir: tempfile::TempDir,
    pub backend: B,
}

impl<B: QuotaBackend> TestStore<B> {
    pub fn path(&self) -> PathBuf {
        fs::canonicalize(self.dir.path()).unwrap()
    }
}

impl<B: QuotaBackend> Drop for TestStore<B> {
    fn drop(&mut self) {
        if let Ok(ids) = self.backend.list() {
            for id in ids {
                if let Err(e) = self.backend.remove(&id) {
                    eprintln!("cleanup: remove {id}: {e}");
                }
            }
        }
        force_clean(self.dir.path());
    }
}

/// A fresh directory for a store: `<tmp>/paddock-quota-test-XXXX`.
pub fn temp_store_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("paddock-quota-test-")
        .tempdir()
        .unwrap()
}

/// The loop backend on a fresh store, or None (with the probe's reason printed) where loop
/// images cannot work, e.g. without root.
pub fn loop_store() -> Option<TestStore<paddock_quota::LoopImage>> {
    let dir = temp_store_dir();
    let p = probe(dir.path(), &Options::default()).unwrap();
    if let Err(missing) = &p.loop_image {
        eprintln!("skipped: loop images unavailable: {missing}");
        return None;
    }
    let backend = paddock_quota::LoopImage::open(dir.path()).unwrap();
    Some(TestStore { dir, backend })
}

/// Unmounts everything below `dir` and unbinds every loop device backed by a file below it.
pub fn force_clean(dir: &Path) {
    let Ok(dir) = fs::canonicalize(dir) else {
        return;
    };
    if let Ok(mounts) = mountinfo::read() {
        let mut under: Vec<_> = mountinfo::under(&mounts, &dir)
            .into_iter()
            .map(|m| m.mount_point.clone())
            .collect();
        under.reverse();
        for m in under {
            eprintln!("cleanup: leaked mount {}", m.display());
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    if let Ok(devs) = loop_device::backed_under(&dir) {
        for d in devs {
            eprintln!(
                "cleanup: leaked {} on {}",
                d.device.display(),
                d.backing_file.display()
            );
            let _ = Command::new("losetup").arg("-d").arg(&d.device).status();
        }
    }
}

/// Fails if anything of the store at `dir` is mounted or bound to a loop device, or if any of
/// `ids` has a file left.
pub fn assert_nothing_left(dir: &Path, ids: &[&str]) {
    let dir = fs::canonicalize(dir).unwrap();
    let mounts = mountinfo::read().unwrap();
    let left = mountinfo::under(&mounts, &dir);
    assert!(left.is_empty(), "mounts left: {left:#?}");
    let devs = loop_device::backed_under(&dir).unwrap();
    assert!(devs.is_empty(), "loop devices left: {devs:#?}");
    for id in ids {
        for p in [
            dir.join("images").join(format!("{id}.img")),
            dir.join("volumes").join(id),
            dir.join("state").join(format!("{id}.json")),
        ] {
            assert!(p.symlink_metadata().is_err(), "{} left", p.display());
        }
    }
}

/// Runs `f` in directory `dir` on a thread whose credentials are `uid`/`gid`, with no
/// supplementary groups and no capabilities, the way a sandboxed app reaches its bind-mounted
/// volume: the store's own 0700 directories are not in its way, so `f` uses relative paths.
/// (Credentials and, after unshare(CLONE_FS), the working directory are per thread; the raw
/// syscalls change only this one.)
pub fn run_as<T: Send>(dir: &Path, uid: u32, gid: u32, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare(CLONE_FS) takes no pointer and affects only this thread.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_FS) }, 0);
            std::env::set_current_dir(dir).unwrap();
            // SAFETY: raw setgroups/setresgid/setresuid on this thread only; the only pointer
            // is the null list of setgroups(0).
            unsafe {
                assert_eq!(
                    libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()),
                    0
                );
                assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
                assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
            }
            f()
        })
        .join()
        .unwrap()
    })
}

/// Writes `path` in 64 KiB chunks until `limit` bytes or an error; returns the bytes written
/// and the error, after fsync when there was none.
pub fn fill(path: &Path, limit: u64) -> (u64, Option<io::Error>) {
    let mut f = match fs::File::create(path) {
        Ok(f) => f,
        Err(e) => return (0, Some(e)),
    };
    let chunk = vec![0xA5u8; 64 << 10];
    let mut written = 0u64;
    while written < limit {
        let n = (limit - written).min(chunk.len() as u64) as usize;
        match f.write(&chunk[..n]) {
            Ok(0) => return (written, Some(io::Error::from(io::ErrorKind::WriteZero))),
            Ok(k) => written += k as u64,
            Err(e) => return (written, Some(e)),
        }
    }
    match f.sync_all() {
        Ok(()) => (written, None),
        Err(e) => (written, Some(e)),
    }
}

/// Creates empty files `f0`, `f1`, ... in `dir` until an error; returns how many and the error.
pub fn make_files(dir: &Path, max: u64) -> (u64, Option<io::Error>) {
    for i in 0..max {
        if let Err(e) = fs::File::create(dir.join(format!("f{i}"))) {
            return (i, Some(e));
        }
    }
    (max, None)
}
