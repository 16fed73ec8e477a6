//! Mounting one of containerd's rootfs mounts, in the shim's own process.
//!
//! containerd-shim's `mount_rootfs` forks the (multi-threaded) shim for every mount and learns
//! the outcome from the child's exit through the reaper: a millisecond or more of the create
//! path, and a forked copy of a threaded process. The one reason for a separate context, a
//! working directory from which overlay's long `lowerdir` list fits the kernel's one-page limit,
//! needs no process: a short-lived thread unshares its filesystem context and changes directory
//! there, leaving the shim's own untouched. Options are read the way containerd reads them.
//!
//! Unmounting at delete is [`detach`]ed: the mounts leave the mount table at once and a
//! background thread drops the last reference. The last reference to an overlay syncs its
//! upper filesystem (the whole filesystem containerd's snapshots live on): a few milliseconds,
//! tens of them while anything else writes to that disk, that no caller needs to wait for.

use std::path::{Path, PathBuf};

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

const LOWERDIR: &str = "lowerdir=";

/// The options that are mount flags (`clear`: the option removes the flag); every other option
/// goes to the filesystem as data (propagation options are no flags here, as for containerd).
const FLAGS: &[(&str, bool, MsFlags)] = &[
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("atime", true, MsFlags::MS_NOATIME),
    ("bind", false, MsFlags::MS_BIND),
    ("defaults", false, MsFlags::empty()),
    ("dev", true, MsFlags::MS_NODEV),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("nodev", false, MsFlags::MS_NODEV),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("suid", true, MsFlags::MS_NOSUID),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
];

/// The system calls one mount takes.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub flags: MsFlags,
    pub data: Option<String>,
    /// Whether the first mount(2) is made: a bare remount without data changes nothing.
    pub mounts: bool,
    /// A read-only bind is made read-only by a remount.
    pub remount_ro: bool,
    /// The directory the overlay's relative `lowerdir` entries are relative to.
    pub chdir: Option<PathBuf>,
}

/// What mounting `fs_type` with `options` takes; `page`: the kernel's limit on the data.
pub fn plan(fs_type: &str, options: &[String], page: usize) -> Result<Plan, String> {
    let size: usize = options.iter().map(String::len).sum();
    let (chdir, options) = if fs_type == "overlay" && size + 512 >= page {
        compact_lowerdirs(options)
    } else {
        (None, options.to_vec())
    };
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in &options {
        match FLAGS.iter().find(|(name, _, _)| name == o) {
            Some((_, true, f)) => flags.remove(*f),
            Some((_, false, f)) => flags.insert(*f),
            None => data.push(o.as_str()),
        }
    }
    let data = (!data.is_empty()).then(|| data.join(","));
    if data.as_ref().is_some_and(|d| d.len() > page) {
        return Err(format!(
            "mount options of {fs_type} longer than the kernel takes ({page} bytes)"
        ));
    }
    Ok(Plan {
        flags,
        mounts: !flags.contains(MsFlags::MS_REMOUNT) || data.is_some(),
        data,
        remount_ro: flags.contains(MsFlags::MS_BIND.union(MsFlags::MS_RDONLY)),
        chdir,
    })
}

/// Overlay's lowerdirs made relative to their common parent directory, and that directory;
/// the options unchanged if they share none.
fn compact_lowerdirs(options: &[String]) -> (Option<PathBuf>, Vec<String>) {
    let dirs: Vec<&str> = options
        .iter()
        .filter_map(|o| o.strip_prefix(LOWERDIR))
        .flat_map(|l| l.split(':'))
        .collect();
    if dirs.len() < 2 {
        return (None, options.to_vec());
    }
    let mut prefix = dirs[0];
    for d in &dirs[1..] {
        let common = prefix
            .char_indices()
            .zip(d.chars())
            .find(|((_, a), b)| a != b)
            .map_or(prefix.len().min(d.len()), |((i, _), _)| i);
        prefix = &prefix[..common];
    }
    // up to the last '/': snapshot directories are numbered, so `.../snapshots/1` is the
    // common prefix of `.../snapshots/12` and `.../snapshots/13` but no directory of theirs
    let Some(slash) = prefix.rfind('/') else {
        return (None, options.to_vec());
    };
    let base = &prefix[..=slash];
    if base == "/" {
        return (None, options.to_vec());
    }
    let relative: Vec<&str> = dirs
        .iter()
        .map(|d| d.strip_prefix(base).unwrap_or(d))
        .collect();
    let lower = format!("{LOWERDIR}{}", relative.join(":"));
    let options = options
        .iter()
        .map(|o| {
            if o.starts_with(LOWERDIR) {
                lower.clone()
            } else {
                o.clone()
            }
        })
        .collect();
    (Some(PathBuf::from(base)), options)
}

/// Mounts `source` (`fs_type`, `options`) at `target`.
pub fn mount_one(
    fs_type: &str,
    source: &str,
    options: &[String],
    target: &Path,
) -> Result<(), String> {
    // SAFETY: sysconf takes no pointers.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let p = plan(fs_type, options, page)?;
    let Some(dir) = p.chdir.clone() else {
        return apply(&p, fs_type, source, target);
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            // this thread's working directory only: the shim's stays where it is
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                .map_err(|e| format!("unshare the working directory: {e}"))?;
            std::env::set_current_dir(&dir).map_err(|e| format!("chdir {}: {e}", dir.display()))?;
            apply(&p, fs_type, source, target)
        })
        .join()
        .unwrap_or_else(|_| Err("the mount thread panicked".into()))
    })
}

fn apply(p: &Plan, fs_type: &str, source: &str, target: &Path) -> Result<(), String> {
    let none: Option<&str> = None;
    let source = (!source.is_empty()).then_some(source);
    let fs_type = (!fs_type.is_empty()).then_some(fs_type);
    if p.mounts {
        mount(source, target, fs_type, p.flags, p.data.as_deref())
            .map_err(|e| format!("mount: {e}"))?;
    }
    if p.remount_ro {
        mount(none, target, none, p.flags.union(MsFlags::MS_REMOUNT), none)
            .map_err(|e| format!("make the bind read-only: {e}"))?;
    }
    Ok(())
}

/// Takes every mount at `rootfs` (and below) out of the mount table, then lets a thread of its
/// own drop the last references, where the kernel tears the filesystems down. Returns how many
/// mounts were stacked at `rootfs`.
pub fn detach(rootfs: &Path) -> Result<usize, String> {
    let mut held: Vec<File> = Vec::new();
    let result = loop {
        // a reference to the topmost mount at `rootfs`, which keeps it alive once detached
        let fd = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(rootfs)
        {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break Ok(held.len()),
            Err(e) => break Err(format!("open {}: {e}", rootfs.display())),
        };
        match umount2(rootfs, MntFlags::MNT_DETACH) {
            Ok(()) => held.push(fd),
            // not (or no longer) a mount point
            Err(Errno::EINVAL) => break Ok(held.len()),
            Err(e) => break Err(format!("unmount {}: {e}", rootfs.display())),
        }
    };
    if !held.is_empty() {
        let spawned = std::thread::Builder::new()
            .name("unmount".into())
            .stack_size(64 * 1024)
            .spawn(move || drop(held));
        if let Err(e) = spawned {
            log::warn!("no thread to finish unmounting {}: {e}", rootfs.display());
        }
    }
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn opts(o: &[&str]) -> Vec<String> {
        o.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_and_data() {
        let p = plan(
            "overlay",
            &opts(&[
                "index=off",
                "workdir=/w",
                "upperdir=/u",
                "lowerdir=/l",
                "ro",
            ]),
            4096,
        )
        .unwrap();
        assert_eq!(p.flags, MsFlags::MS_RDONLY);
        assert_eq!(
            p.data.as_deref(),
            Some("index=off,workdir=/w,upperdir=/u,lowerdir=/l")
        );
        assert!(p.mounts && !p.remount_ro);
        assert_eq!(p.chdir, None);
        // a later option undoes an earlier one
        let p = plan("ext4", &opts(&["ro", "nosuid", "rw", "defaults"]), 4096).unwrap();
        assert_eq!(p.flags, MsFlags::MS_NOSUID);
        assert_eq!(p.data, None);
    }

    #[test]
    fn read_only_bind_and_remount() {
        let p = plan("", &opts(&["rbind", "ro", "rslave"]), 4096).unwrap();
        // rslave is no flag of ours: data, as containerd's own table has it
        assert_eq!(p.data.as_deref(), Some("rslave"));
        let p = plan("none", &opts(&["bind", "ro"]), 4096).unwrap();
        assert!(p.remount_ro);
        assert_eq!(p.flags, MsFlags::MS_BIND | MsFlags::MS_RDONLY);
        let p = plan("none", &opts(&["remount", "ro"]), 4096).unwrap();
        assert!(!p.mounts, "a remount without data makes no first mount");
    }

    #[test]
    fn long_lowerdirs_are_made_relative() {
        let base = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/";
        let lower: Vec<String> = (100..160).map(|i| format!("{base}{i}/fs")).collect();
        let o = vec![
            "index=off".to_string(),
            format!("workdir={base}200/work"),
            format!("upperdir={base}200/fs"),
            format!("lowerdir={}", lower.join(":")),
        ];
        assert!(o.iter().map(String::len).sum::<usize>() > 4096);
        let p = plan("overlay", &o, 4096).unwrap();
        assert_eq!(p.chdir.as_deref(), Some(Path::new(base)));
        let data = p.data.unwrap();
        assert!(data.contains("lowerdir=100/fs:101/fs:"), "{data}");
        assert!(data.contains(&format!("upperdir={base}200/fs")), "{data}");
        assert!(data.len() < 4096);
        // short options stay as they are
        let p = plan("overlay", &o[..3], 4096).unwrap();
        assert_eq!(p.chdir, None);
    }

    #[test]
    fn no_common_directory_no_chdir() {
        let (dir, o) = compact_lowerdirs(&opts(&["lowerdir=/a/x:/b/y"]));
        assert_eq!(dir, None);
        assert_eq!(o, opts(&["lowerdir=/a/x:/b/y"]));
        let (dir, _) = compact_lowerdirs(&opts(&["lowerdir=/only/one"]));
        assert_eq!(dir, None);
        let (dir, o) = compact_lowerdirs(&opts(&["lowerdir=/s/12/fs:/s/13/fs", "ro"]));
        assert_eq!(dir.as_deref(), Some(Path::new("/s/")));
        assert_eq!(o, opts(&["lowerdir=12/fs:13/fs", "ro"]));
    }

    #[test]
    fn data_over_a_page_is_refused() {
        let long = format!("lowerdir={}", "/x".repeat(3000));
        let e = plan("ext4", &[long], 4096).unwrap_err();
        assert!(e.contains("4096"), "{e}");
    }

    /// The real kernel: an overlay whose lowerdir list is longer than a page is mounted from a
    /// thread's own working directory, and the shim's stays where it was.
    #[test]
    fn long_overlay_mounts_for_real() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let layers = dir
            .path()
            .join("a-rather-long-directory-name-for-the-snapshots-of-this-test");
        let lower: Vec<String> = (0..80)
            .map(|i| {
                let d = layers.join(format!("{i}")).join("fs");
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join(format!("layer{i}")), b"x").unwrap();
                d.to_string_lossy().into_owned()
            })
            .collect();
        let (upper, work, target) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("rootfs"),
        );
        for d in [&upper, &work, &target] {
            std::fs::create_dir(d).unwrap();
        }
        let o = vec![
            format!("workdir={}", work.display()),
            format!("upperdir={}", upper.display()),
            format!("lowerdir={}", lower.join(":")),
        ];
        assert!(o.iter().map(String::len).sum::<usize>() > 4096);
        let cwd = std::env::current_dir().unwrap();
        mount_one("overlay", "overlay", &o, &target).unwrap();
        let seen = target.join("layer0").exists() && target.join("layer79").exists();
        let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
        assert!(seen, "the overlay shows every layer");
        assert_eq!(std::env::current_dir().unwrap(), cwd);
        // detached: out of the table at once, stacked mounts too; nothing left to detach after
        mount_one("overlay", "overlay", &o, &target).unwrap();
        mount_one("", &lower[1], &opts(&["rbind", "ro"]), &target).unwrap();
        assert!(target.join("layer1").exists() && !target.join("layer0").exists());
        assert_eq!(detach(&target), Ok(2));
        assert!(!target.join("layer1").exists() && !target.join("layer0").exists());
        assert_eq!(detach(&target), Ok(0));
        assert_eq!(detach(&dir.path().join("nothing-here")), Ok(0));
        // a mount that fails says so
        let e = mount_one("overlay", "overlay", &o[1..], &target).unwrap_err();
        assert!(e.starts_with("mount: "), "{e}");
    }
}
