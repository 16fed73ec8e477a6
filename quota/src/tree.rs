//! Project quota on an existing directory tree that lives outside the store: a bundle's
//! writable rootfs. Every directory and regular file of the tree (not crossing into other
//! mounts) gets a project id leased from the store's pool (`<store>/projects`, the same leases
//! and lock as [`crate::ProjectQuota`]); directories also get the inherit flag, so that what
//! the sandbox creates is charged too. The project's limits are what the tree already holds
//! plus the allowance asked for. Detaching clears the limits, puts the tree back in project 0
//! and ends the lease; the tree itself is the caller's.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, QuotaFailure, Result};
use crate::probe::QuotaFs;
use crate::project::lease::Leases;
use crate::quotactl::{in_use, Target, PRJQUOTA};
use crate::store::Store;
use crate::{fsxattr, volume_id, Backend, Limits, Options, Usage};

/// A tree under project quota.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TreeLimit {
    pub path: PathBuf,
    pub project_id: u32,
    /// What the kernel enforces: the tree's size when attached plus the allowance.
    pub limits: Limits,
}

/// Project quota on the filesystem holding a tree, with ids leased from a store.
#[derive(Debug)]
pub struct TreeQuota {
    fs: QuotaFs,
    target: Target,
    leases: Leases,
}

impl TreeQuota {
    /// Opens project quota for `tree`, leasing ids from the store at `store`. Fails with
    /// [`Error::Unsupported`], saying what is missing, where the tree's filesystem has none.
    pub fn open(tree: &Path, store: &Path, options: &Options) -> Result<Self> {
        let tree_options = Options {
            user_quota: false,
            ..options.clone()
        };
        let p = crate::probe(tree, &tree_options)?;
        let fs = p
            .project
            .clone()
            .map_err(|m| Error::unsupported(Backend::Project, m))?;
        let mount = p.mount.as_ref().ok_or_else(|| {
            Error::unsupported(
                Backend::Project,
                crate::Missing::Mount {
                    path: p.store.clone(),
                },
            )
        })?;
        let target = Target::open(&p.store, &mount.source)?;
        let store = Store::open(store)?;
        store.ensure(&[&store.projects])?;
        Ok(TreeQuota {
            fs,
            target,
            leases: Leases {
                dir: store.projects,
                range: options.project_ids.clone(),
            },
        })
    }

    fn xfs(&self) -> bool {
        self.fs == QuotaFs::Xfs
    }

    /// Puts `tree` under a project leased to `id`, limited to what it holds now plus
    /// `allowance`. On failure, undoes what it did.
    pub fn attach(&self, id: &str, tree: &Path, allowance: &Limits) -> Result<TreeLimit> {
        volume_id::check(id)?;
        allowance.validate()?;
        let xfs = self.xfs();
        let projid = self
            .leases
            .allocate(id, |p| Ok(in_use(&self.target.usage(xfs, PRJQUOTA, p)?)))?;
        let attached = (|| {
            let dev = fs::symlink_metadata(tree)
                .map_err(|e| Error::io("stat", tree, e))?
                .dev();
            tag(tree, dev, projid)?;
            let held = self.target.usage(xfs, PRJQUOTA, projid)?;
            let limits = Limits {
                bytes: held.bytes_used.saturating_add(allowance.bytes),
                inodes: held.inodes_used.saturating_add(allowance.inodes),
            };
            self.target
                .set_limits(xfs, PRJQUOTA, projid, Some(&limits))?;
            let u = self.target.usage(xfs, PRJQUOTA, projid)?;
            Ok(TreeLimit {
                path: tree.to_path_buf(),
                project_id: projid,
                limits: Limits {
                    bytes: u.bytes_limit,
                    inodes: u.inodes_limit,
                },
            })
        })();
        if attached.is_err() {
            if let Err(e) = self.detach(id, tree, Some(projid)) {
                tracing::warn!(id, error = %e, "cleanup after a failed attach");
            }
        }
        attached
    }

    /// The project id leased to `id`, if any.
    pub fn project_of(&self, id: &str) -> Result<Option<u32>> {
        volume_id::check(id)?;
        self.leases.find(id)
    }

    /// Usage and limits of the tree's project.
    pub fn usage(&self, projid: u32) -> Result<Usage> {
        self.target.usage(self.xfs(), PRJQUOTA, projid)
    }

    /// Clears the limits of the project leased to `id` (or `projid`), puts what is left of
    /// `tree` back in project 0 and ends the lease. Idempotent; a missing tree is fine.
    pub fn detach(&self, id: &str, tree: &Path, projid: Option<u32>) -> Result<()> {
        volume_id::check(id)?;
        let projid = match projid {
            Some(p) => Some(p),
            None => self.leases.find(id)?,
        };
        if let Ok(meta) = fs::symlink_metadata(tree) {
            tag(tree, meta.dev(), 0)?;
        }
        if let Some(p) = projid {
            self.target.set_limits(self.xfs(), PRJQUOTA, p, None)?;
        }
        self.leases.release(id)
    }
}

/// Sets project `projid` (0: none) on `path` and everything below it on device `dev`;
/// directories also get (or lose) the inherit flag. Symlinks and special files are left as
/// they are (their inode cannot be opened for the ioctl without side effects).
fn tag(path: &Path, dev: u64, projid: u32) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
    if meta.dev() != dev {
        return Ok(());
    }
    let ft = meta.file_type();
    if !(ft.is_dir() || ft.is_file()) {
        return Ok(());
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    set_project(&file, path, projid, ft.is_dir())?;
    if ft.is_dir() {
        let entries = fs::read_dir(path).map_err(|e| Error::io("read", path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", path, e))?;
            tag(&entry.path(), dev, projid)?;
        }
    }
    Ok(())
}

fn set_project(file: &File, path: &Path, projid: u32, dir: bool) -> Result<()> {
    let error = |e| Error::ProjectId {
        path: path.to_path_buf(),
        id: projid,
        reason: QuotaFailure::from_errno(e),
    };
    let attrs = fsxattr::get(file).map_err(error)?;
    let mut wanted = fsxattr::with_project(attrs, projid);
    if !dir {
        // The inherit flag means nothing on a file (XFS refuses it there).
        wanted.fsx_xflags &= !fsxattr::FS_XFLAG_PROJINHERIT;
        wanted.fsx_xflags |= attrs.fsx_xflags & fsxattr::FS_XFLAG_PROJINHERIT;
    }
    if wanted == attrs {
        return Ok(());
    }
    fsxattr::set(file, &wanted).map_err(error)
}
