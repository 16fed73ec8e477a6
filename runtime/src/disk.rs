//! The sandbox's writable volume under a disk quota (`io.paddock.disk`): created through the
//! quota crate's backend before the engine runs, bind-mounted into the sandbox, measured for
//! stats, removed at delete. Everything needed to remove it is in the sandbox record, so
//! `delete --force` after a crash finds it.
//!
//! When the bundle's rootfs is writable and on a filesystem with project quota, the rootfs
//! tree gets the same allowance on top of what it already holds (project id on the tree, ids
//! leased from the quota store), so the sandbox cannot fill the host's disk through `/`
//! either. The tree goes back to project 0 at delete.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder};
use paddock_quota::{
    Backend, Limits, LoopImage, Options, Owner, ProjectQuota, QuotaBackend, TreeQuota, Usage,
    Volume,
};
use serde::{Deserialize, Serialize};

use crate::config::QuotaConfig;
use crate::error::{Error, Result};
use crate::policy::Disk;

/// What the record keeps of a sandbox's volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeRef {
    pub store: PathBuf,
    pub id: String,
    pub backend: Backend,
    /// The bundle's writable rootfs tree, when it is under project quota too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<PathBuf>,
}

/// The rootfs tree to put under the disk quota as well: a writable rootfs on a filesystem with
/// project quota. Elsewhere (read-only rootfs, overlay, no prjquota) the volume alone carries
/// the quota.
pub fn quota_rootfs(cfg: &QuotaConfig, rootfs: &Path, readonly: bool) -> Option<PathBuf> {
    if readonly {
        return None;
    }
    match TreeQuota::open(rootfs, &cfg.store, &options()) {
        Ok(_) => Some(rootfs.to_path_buf()),
        Err(e) => {
            tracing::debug!(rootfs = %rootfs.display(), "no project quota on the rootfs: {e}");
            None
        }
    }
}

/// The lease name of a volume's rootfs project.
fn rootfs_id(vref: &VolumeRef) -> String {
    format!("rootfs-{}", vref.id)
}

/// Inodes a volume gets when `io.paddock.disk.inodes` is absent: one per 16 KiB, at least 1024.
pub fn default_inodes(bytes: u64) -> u64 {
    (bytes / (16 << 10)).max(1024)
}

fn options() -> Options {
    Options::default()
}

/// Picks the backend for the store (forced by the config, or probed).
pub fn backend_for(cfg: &QuotaConfig) -> Result<Backend> {
    std::fs::create_dir_all(&cfg.store).map_err(|e| Error::io("create", &cfg.store, e))?;
    let forced = match cfg.backend.as_deref() {
        Some(b) => Some(b.parse::<Backend>()?),
        None => None,
    };
    Ok(paddock_quota::probe(&cfg.store, &options())?.choose(forced)?)
}

/// The backend a volume was made with; no probe, since create already chose it.
fn open(store: &Path, backend: Backend) -> Result<Box<dyn QuotaBackend>> {
    Ok(match backend {
        Backend::Loop => Box::new(LoopImage::open(store)?),
        Backend::Project => Box::new(ProjectQuota::open(store, &options())?),
    })
}

/// Creates the volume for `disk`, owned by the sandbox's user.
pub fn create(vref: &VolumeRef, disk: &Disk, owner: Owner) -> Result<Volume> {
    paddock_quota::check_fits(&vref.store, disk.bytes)?;
    let inodes = disk.inodes.unwrap_or_else(|| default_inodes(disk.bytes));
    let limits = Limits::new(disk.bytes, inodes)?;
    let volume = open(&vref.store, vref.backend)?.create(&vref.id, &limits, owner)?;
    if let Some(tree) = &vref.rootfs {
        let t = TreeQuota::open(tree, &vref.store, &options())?;
        let held = t.attach(&rootfs_id(vref), tree, &limits)?;
        tracing::debug!(rootfs = %tree.display(), project = held.project_id, "rootfs quota");
    }
    Ok(volume)
}

/// The bind mount that shows the volume at `destination` inside the sandbox.
pub fn mount(volume: &Volume, destination: &Path) -> Result<Mount> {
    MountBuilder::default()
        .destination(destination.to_path_buf())
        .typ("bind")
        .source(volume.path.clone())
        .options(vec![
            "rbind".to_string(),
            "rw".to_string(),
            "nosuid".to_string(),
            "nodev".to_string(),
        ])
        .build()
        .map_err(|e| Error::Invalid(format!("volume mount at {}: {e}", destination.display())))
}

/// Current usage of the volume.
pub fn usage(vref: &VolumeRef) -> Result<Usage> {
    Ok(open(&vref.store, vref.backend)?.usage(&vref.id)?)
}

/// Current usage of the rootfs tree's project, when it has one.
pub fn rootfs_usage(vref: &VolumeRef) -> Result<Option<Usage>> {
    let Some(tree) = &vref.rootfs else {
        return Ok(None);
    };
    let t = TreeQuota::open(tree, &vref.store, &options())?;
    match t.project_of(&rootfs_id(vref))? {
        Some(projid) => Ok(Some(t.usage(projid)?)),
        None => Ok(None),
    }
}

/// Removes the volume (and the rootfs tree's project): idempotent, and finishes a half-made
/// or half-removed one.
pub fn remove(vref: &VolumeRef) -> Result<()> {
    if !vref.store.exists() {
        return Ok(());
    }
    if let Some(tree) = vref.rootfs.as_ref().filter(|t| t.exists()) {
        TreeQuota::open(tree, &vref.store, &options())?.detach(&rootfs_id(vref), tree, None)?;
    }
    Ok(open(&vref.store, vref.backend)?.remove(&vref.id)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_keys_are_per_root_and_valid_volume_ids() {
        use crate::store::node_key;
        let a = node_key(Path::new("/run/paddock"), "web-0");
        let b = node_key(Path::new("/run/containerd/runc/k8s.io"), "web-0");
        assert_ne!(a, b);
        assert_eq!(a, node_key(Path::new("/run/paddock"), "web-0"));
        assert!(paddock_quota::volume_id::check(&a).is_ok());
        assert!(crate::id::validate(&a).is_ok());
        let long = node_key(Path::new("/r"), &"x".repeat(1024));
        assert!(paddock_quota::volume_id::check(&long).is_ok());
    }

    #[test]
    fn inode_defaults() {
        assert_eq!(default_inodes(1 << 20), 1024);
        assert_eq!(default_inodes(1 << 30), 65536);
    }
}
