//! What a sandbox's identity may touch on the host (the contract's ACL point), on top of the
//! [`acl`] codec:
//!
//! - its writable directory (the disk volume, the only host directory paddock makes for a
//!   sandbox) is private: [`acl::grant_only`];
//! - the deny list (`io.paddock.acl.deny` and the node's `[acl] deny`) gets `user:<uid>:---`
//!   entries, recorded in the sandbox record before they are added and taken out at delete.
//!
//! Deny paths are paths as the sandbox sees them: resolved inside its rootfs (symlinks in
//! directories followed without leaving it: `/bin/su` on a merged-/usr rootfs is
//! `<rootfs>/usr/bin/su`), or inside the source of a bind mount of the spec when the path is
//! under its destination. A path whose last component is a symlink is never followed, and a file
//! with more than one hard link is never denied: in a busybox rootfs `/bin/su` is a link to
//! `/bin/busybox`, and an entry there would deny every command. An `io.paddock.acl.deny` entry
//! that is missing, a symlink, hard-linked or under a non-bind mount is an error at create; the
//! node's list applies only where its paths are plain files (a node list is written once for
//! many rootfs layouts).
//!
//! The entries name the host uids the sandbox's processes run as: its pool identity or, with a
//! user namespace, the range's base (container root) and the host id of the app's user; paddock
//! joins the namespace for `exec` too ([`crate::userns`]). They bite because a sandbox never
//! owns the files it is denied: a file owned by an id of the pool is refused (explicit) or
//! skipped (node list), as its owner would get the ACL's owner class, which named entries do not
//! restrict. Sandboxes run without capabilities; in a user namespace, CAP_DAC_OVERRIDE would in
//! any case apply only to files whose owner and group are both mapped into it, and the rootfs's
//! host-owned files are not.
//!
//! Edits of ACLs take a node-wide lock (`acl.lock` beside the lease directory): each edit reads,
//! changes and writes the whole xattr, so two sandboxes denying one file at once would otherwise
//! lose an entry.

use std::fs::{File, OpenOptions};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::acl::{self, Located};
use crate::error::{Error, Result};
use crate::policy::ACL_DENY;

/// What paddock added to ACLs for one sandbox: kept in its record, written before any entry is
/// added, so that delete (`delete --force` after a crash too) takes out exactly these entries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessRef {
    /// Host uids denied: the pool identity; in a user namespace, the host ids of container root
    /// and of the app's user.
    pub uids: Vec<u32>,
    /// Host files that got a `user:<uid>:---` entry for each of `uids`.
    pub denied: Vec<PathBuf>,
    /// Directories above a user namespace's volume that got `user:<uid>:--x` for the
    /// namespace's root (the first of `uids`), so that its init can reach the volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searchable: Vec<PathBuf>,
    /// The node's ACL lock file.
    pub lock: PathBuf,
}

/// The node's ACL lock file: `acl.lock` beside the identity lease directory.
pub fn lock_file(lease_dir: &Path) -> PathBuf {
    lease_dir.with_file_name("acl.lock")
}

/// Where a deny path is looked up: the root it is resolved in and the path below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Inside `root` (the rootfs, or a bind mount's source), at `rel`.
    In { root: PathBuf, rel: PathBuf },
    /// Under a mount paddock cannot see into from the host (tmpfs, proc, …).
    Mount { typ: String, destination: PathBuf },
}

/// Where `path` lives for a sandbox with this spec and rootfs: the bind mount with the longest
/// destination above it (later mounts win a tie, as they are mounted over earlier ones), else
/// the rootfs. Pure: no file is looked at.
pub fn place(spec: &Spec, rootfs: &Path, path: &Path) -> Place {
    let mut best: Option<&oci_spec::runtime::Mount> = None;
    for m in spec.mounts().iter().flatten() {
        let dest = m.destination();
        if path.starts_with(dest)
            && best
                .is_none_or(|b| dest.components().count() >= b.destination().components().count())
        {
            best = Some(m);
        }
    }
    let Some(m) = best else {
        return Place::In {
            root: rootfs.to_path_buf(),
            rel: path.to_path_buf(),
        };
    };
    let is_bind = m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind");
    match m.source() {
        Some(source) if is_bind && source.is_absolute() => {
            let below = path.strip_prefix(m.destination()).unwrap_or(Path::new(""));
            if below.as_os_str().is_empty() {
                // The mount itself: its source, looked up in its parent.
                match (source.parent(), source.file_name()) {
                    (Some(parent), Some(name)) => Place::In {
                        root: parent.to_path_buf(),
                        rel: PathBuf::from(name),
                    },
                    _ => Place::In {
                        root: source.clone(),
                        rel: PathBuf::from("."),
                    },
                }
            } else {
                Place::In {
                    root: source.clone(),
                    rel: below.to_path_buf(),
                }
            }
        }
        _ => Place::Mount {
            typ: m.typ().clone().unwrap_or_else(|| "unknown".into()),
            destination: m.destination().clone(),
        },
    }
}

/// Why a deny path does not name a file paddock may put an entry on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Symlink(PathBuf),
    HardLinked(u64),
    OnMount {
        typ: String,
        destination: PathBuf,
    },
    /// Owned by an id of the identity pool: a sandbox running as its owner gets the owner
    /// class of the ACL, which no named entry can take away.
    PoolOwned(u32),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Missing => write!(f, "does not exist in the sandbox"),
            Refusal::Symlink(target) => write!(
                f,
                "is a symbolic link (to {}); name the file itself: an entry on a shared target \
                 such as busybox would deny every command",
                target.display()
            ),
            Refusal::HardLinked(n) => write!(
                f,
                "has {n} hard links: an entry on it would deny every one of its names"
            ),
            Refusal::OnMount { typ, destination } => write!(
                f,
                "is on the sandbox's {typ} mount at {}, which has no host file to deny",
                destination.display()
            ),
            Refusal::PoolOwned(uid) => write!(
                f,
                "is owned by uid {uid} of the identity pool: a sandbox running as a file's owner \
                 gets the owner's permissions, which a user:<uid>:--- entry cannot take away"
            ),
        }
    }
}

/// Whether a named-user entry can deny a file owned by `owner` to sandboxes of the pool
/// `pool`: not when a sandbox may run as the owner (a rootfs chowned to a user namespace's
/// range, say). Pure.
pub fn owner_refusal(owner: u32, pool: &RangeInclusive<u32>) -> Option<Refusal> {
    pool.contains(&owner).then_some(Refusal::PoolOwned(owner))
}

/// The host file a deny path names, or why there is none. `pool` is the node's identity pool.
pub fn target(
    spec: &Spec,
    rootfs: &Path,
    path: &Path,
    pool: &RangeInclusive<u32>,
) -> Result<std::result::Result<PathBuf, Refusal>> {
    let (root, rel) = match place(spec, rootfs, path) {
        Place::In { root, rel } => (root, rel),
        Place::Mount { typ, destination } => return Ok(Err(Refusal::OnMount { typ, destination })),
    };
    Ok(match acl::locate(&root, &rel)? {
        Located::Missing => Err(Refusal::Missing),
        Located::Symlink { target } => Err(Refusal::Symlink(target)),
        Located::File { links, .. } if links > 1 => Err(Refusal::HardLinked(links)),
        Located::File { path, .. } => {
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::symlink_metadata(&path)
                .map_err(|e| Error::io("stat", &path, e))?
                .uid();
            match owner_refusal(owner, pool) {
                Some(why) => Err(why),
                None => Ok(path),
            }
        }
    })
}

/// The host files to deny: every `explicit` path (an error naming the first one that cannot
/// be denied) and the `defaults` that name plain files (others skipped), without duplicates.
pub fn deny_targets(
    spec: &Spec,
    rootfs: &Path,
    explicit: &[PathBuf],
    defaults: &[PathBuf],
    pool: &RangeInclusive<u32>,
) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    for path in explicit {
        match target(spec, rootfs, path, pool)? {
            Ok(file) => push_new(&mut out, file),
            Err(why) => {
                return Err(Error::Annotation {
                    key: ACL_DENY.into(),
                    value: path.display().to_string(),
                    reason: format!("{} {why}", path.display()),
                })
            }
        }
    }
    for path in defaults {
        match target(spec, rootfs, path, pool)? {
            Ok(file) => push_new(&mut out, file),
            Err(Refusal::Missing) => {}
            Err(why) => {
                tracing::debug!(path = %path.display(), "node deny list entry skipped: {why}")
            }
        }
    }
    Ok(out)
}

fn push_new(out: &mut Vec<PathBuf>, p: PathBuf) {
    if !out.contains(&p) {
        out.push(p);
    }
}

/// The absolute sources of the spec's bind mounts.
pub fn bind_sources(spec: &Spec) -> impl Iterator<Item = &Path> {
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| {
            m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind")
        })
        .filter_map(|m| m.source().as_deref())
        .filter(|s| s.is_absolute())
}

/// A user namespace's root is an unprivileged host uid: every directory from `/` down to each
/// of `paths` (the rootfs, the state root) must let others search it, or the sandbox's init
/// cannot reach them. Directories that do not exist yet are skipped.
pub fn check_reachable(paths: &[&Path]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for &path in paths {
        for dir in path.ancestors() {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() && m.mode() & 0o001 == 0 => {
                    return Err(Error::Annotation {
                        key: crate::policy::USERNS.into(),
                        value: "true".into(),
                        reason: format!(
                            "{} is mode {:04o}: the sandbox's root (an unprivileged host uid) \
                             cannot reach {}; a user namespace needs o+x on every directory \
                             above it",
                            dir.display(),
                            m.mode() & 0o7777,
                            path.display()
                        ),
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("stat", dir, e)),
            }
        }
    }
    Ok(())
}

/// The node's ACL lock, held while entries are added or removed.
struct AclLock(#[allow(dead_code)] Flock<File>);

impl AclLock {
    fn take(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(Self)
            .map_err(|(_, e)| Error::sys("flock ACL lock", e))
    }
}

/// Denies `targets` to `uids`. Under the lock, it leaves out files where one of the uids already
/// has an entry (someone else's: never paddock's to remove), calls `persist` with what it is
/// about to add, and only then adds it.
pub fn deny_all(
    uids: &[u32],
    targets: &[PathBuf],
    lock: &Path,
    persist: impl FnOnce(&AccessRef) -> Result<()>,
) -> Result<AccessRef> {
    let _lock = AclLock::take(lock)?;
    let mut ours = Vec::with_capacity(targets.len());
    for t in targets {
        let mut theirs = false;
        for &uid in uids {
            theirs |= acl::has_user(t, uid)?;
        }
        if theirs {
            tracing::warn!(path = %t.display(), ?uids, "already has an entry for the identity; left as it is");
        } else {
            ours.push(t.clone());
        }
    }
    let aref = AccessRef {
        uids: uids.to_vec(),
        denied: ours,
        searchable: Vec::new(),
        lock: lock.to_path_buf(),
    };
    persist(&aref)?;
    for t in &aref.denied {
        for &uid in &aref.uids {
            acl::deny(t, uid)?;
        }
    }
    Ok(aref)
}

/// Lets the first of `aref.uids` search the directories between `store` (included) and `path`
/// (excluded) that others may not search: a user namespace's init is an unprivileged host uid
/// and must reach its volume to mount it. Recorded through `persist` before being added.
pub fn allow_search_to(
    aref: &mut AccessRef,
    store: &Path,
    path: &Path,
    persist: impl FnOnce(&AccessRef) -> Result<()>,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(&uid) = aref.uids.first() else {
        return Ok(());
    };
    let _lock = AclLock::take(&aref.lock)?;
    let mut dirs = Vec::new();
    for dir in path.ancestors().skip(1) {
        if !dir.starts_with(store) {
            break;
        }
        let m = std::fs::metadata(dir).map_err(|e| Error::io("stat", dir, e))?;
        if m.mode() & 0o001 == 0 && !acl::has_user(dir, uid)? {
            dirs.push(dir.to_path_buf());
        }
    }
    if dirs.is_empty() {
        return Ok(());
    }
    aref.searchable.extend(dirs.iter().cloned());
    persist(aref)?;
    for dir in &dirs {
        acl::set_user(dir, uid, acl::EXECUTE)?;
    }
    Ok(())
}

/// Takes out every entry `aref` recorded; entries of other uids stay byte for byte. Idempotent.
pub fn remove(aref: &AccessRef) -> Result<()> {
    if aref.denied.is_empty() && aref.searchable.is_empty() {
        return Ok(());
    }
    let _lock = AclLock::take(&aref.lock)?;
    for t in aref.denied.iter().chain(&aref.searchable) {
        for &uid in &aref.uids {
            acl::remove_user(t, uid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{MountBuilder, SpecBuilder};

    fn spec(mounts: &[(&str, &str, &str, &[&str])]) -> Spec {
        let mounts = mounts
            .iter()
            .map(|(dest, typ, src, opts)| {
                MountBuilder::default()
                    .destination(*dest)
                    .typ(*typ)
                    .source(*src)
                    .options(opts.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                    .build()
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect::<Vec<_>>();
        SpecBuilder::default()
            .mounts(mounts)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn inside(root: &str, rel: &str) -> Place {
        Place::In {
            root: root.into(),
            rel: rel.into(),
        }
    }

    #[test]
    fn place_picks_the_deepest_bind_mount_or_the_rootfs() {
        let s = spec(&[
            ("/proc", "proc", "proc", &[]),
            ("/tmp", "tmpfs", "tmpfs", &[]),
            ("/shared", "bind", "/srv/shared", &["rbind"]),
            ("/shared/deep", "none", "/srv/deep", &["bind", "ro"]),
            ("/tool", "bind", "/opt/tools/tool-1", &["bind"]),
            ("/rel", "bind", "relative", &["bind"]),
        ]);
        let r = Path::new("/b/rootfs");
        let at = |p: &str| place(&s, r, Path::new(p));
        assert_eq!(at("/usr/bin/su"), inside("/b/rootfs", "/usr/bin/su"));
        assert_eq!(at("/shared/x/y"), inside("/srv/shared", "x/y"));
        assert_eq!(at("/shared/deep/z"), inside("/srv/deep", "z"));
        assert_eq!(at("/shareddir/z"), inside("/b/rootfs", "/shareddir/z"));
        assert_eq!(at("/tool"), inside("/opt/tools", "tool-1"));
        assert_eq!(
            at("/tmp/x"),
            Place::Mount {
                typ: "tmpfs".into(),
                destination: "/tmp".into()
            }
        );
        assert!(matches!(at("/rel/x"), Place::Mount { .. }));
    }

    #[test]
    fn a_later_mount_on_the_same_destination_wins() {
        let s = spec(&[
            ("/data", "tmpfs", "tmpfs", &[]),
            ("/data", "bind", "/srv/data", &["bind"]),
        ]);
        assert_eq!(
            place(&s, Path::new("/r"), Path::new("/data/f")),
            inside("/srv/data", "f")
        );
    }

    fn symlink(target: &str, link: &Path) {
        std::os::unix::fs::symlink(target, link).unwrap_or_else(|e| panic!("{e}"));
    }

    /// A busybox-style rootfs (applets are links to one binary) with a merged /usr, a plain
    /// file and a hard-linked one.
    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let r = d.path();
        for dir in ["usr/bin", "etc"] {
            std::fs::create_dir_all(r.join(dir)).unwrap_or_else(|e| panic!("{e}"));
        }
        symlink("usr/bin", &r.join("bin"));
        std::fs::write(r.join("usr/bin/busybox"), "bb").unwrap_or_else(|e| panic!("{e}"));
        symlink("busybox", &r.join("usr/bin/su"));
        symlink("/usr/bin/busybox", &r.join("usr/bin/mount"));
        std::fs::write(r.join("usr/bin/gcc-12"), "gcc").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(r.join("usr/bin/perl"), "perl").unwrap_or_else(|e| panic!("{e}"));
        std::fs::hard_link(r.join("usr/bin/perl"), r.join("usr/bin/perl5"))
            .unwrap_or_else(|e| panic!("{e}"));
        symlink("../../../../../../etc", &r.join("usr/bin/up"));
        d
    }

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn defaults_skip_symlinks_hard_links_and_missing_paths() {
        let d = rootfs();
        let r = std::fs::canonicalize(d.path()).unwrap_or_else(|e| panic!("{e}"));
        let got = deny_targets(
            &spec(&[]),
            &r,
            &[],
            &paths(&[
                "/bin/su",
                "/usr/bin/mount",
                "/usr/bin/perl",
                "/bin/gcc-12",
                "/usr/bin/gcc-12",
                "/usr/bin/nope",
                "/usr/bin/up/passwd",
            ]),
            &other_pool(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // /bin/gcc-12 and /usr/bin/gcc-12 are one file.
        assert_eq!(got, vec![r.join("usr/bin/gcc-12")]);
    }

    #[test]
    fn explicit_entries_that_cannot_be_denied_are_errors_naming_them() {
        let d = rootfs();
        let r = std::fs::canonicalize(d.path()).unwrap_or_else(|e| panic!("{e}"));
        let s = spec(&[("/tmp", "tmpfs", "tmpfs", &[])]);
        for (path, want) in [
            ("/bin/su", "/bin/su is a symbolic link (to busybox)"),
            ("/usr/bin/perl", "/usr/bin/perl has 2 hard links"),
            (
                "/usr/bin/nope",
                "/usr/bin/nope does not exist in the sandbox",
            ),
            ("/tmp/x", "/tmp/x is on the sandbox's tmpfs mount at /tmp"),
            // `..` through a symlink stays inside the rootfs: there is no /etc/passwd there.
            ("/usr/bin/up/passwd", "does not exist"),
        ] {
            match deny_targets(&s, &r, &paths(&[path]), &[], &other_pool()) {
                Ok(t) => panic!("{path} accepted as {t:?}"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.starts_with("annotation io.paddock.acl.deny="), "{e}");
                    assert!(e.contains(want), "{e} (wanted {want})");
                }
            }
        }
        assert_eq!(
            deny_targets(
                &s,
                &r,
                &paths(&["/bin/gcc-12"]),
                &paths(&["/usr/bin/gcc-12"]),
                &other_pool()
            )
            .unwrap_or_else(|e| panic!("{e}")),
            vec![r.join("usr/bin/gcc-12")]
        );
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    /// A pool that does not hold the test's uid (the owner of the files it makes).
    fn other_pool() -> RangeInclusive<u32> {
        let me = me();
        if me < 1000 {
            me + 1..=me + 100
        } else {
            0..=me - 1
        }
    }

    #[test]
    fn files_owned_by_a_pool_id_are_refused_or_skipped() {
        let d = rootfs();
        let r = std::fs::canonicalize(d.path()).unwrap_or_else(|e| panic!("{e}"));
        let pool = me()..=me();
        assert_eq!(owner_refusal(me(), &pool), Some(Refusal::PoolOwned(me())));
        assert_eq!(owner_refusal(me(), &other_pool()), None);
        match deny_targets(&spec(&[]), &r, &paths(&["/usr/bin/gcc-12"]), &[], &pool) {
            Ok(t) => panic!("a pool-owned file accepted as {t:?}"),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains(&format!(
                        "/usr/bin/gcc-12 is owned by uid {} of the identity pool",
                        me()
                    )),
                    "{e}"
                );
            }
        }
        let skipped = deny_targets(&spec(&[]), &r, &[], &paths(&["/usr/bin/gcc-12"]), &pool)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(skipped.is_empty(), "{skipped:?}");
    }
}
