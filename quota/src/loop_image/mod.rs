//! The loop-image backend: a fixed-size ext4 image per volume under `<store>/images/<id>.img`,
//! bound to a loop device with autoclear and mounted (nodev, nosuid) at `<store>/volumes/<id>`.
//! Writes past the limit fail with ENOSPC, for bytes and for inodes; usage comes from statfs.

mod create;
mod remove;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::probe::Probe;
use crate::statfs::{statfs, EXT4_SUPER_MAGIC};
use crate::store::Store;
use crate::{volume_id, Backend, Limits, Options, Owner, QuotaBackend, Usage, Volume};

/// How long remove waits for a loop device to unbind after its last unmount.
const DETACH_TIMEOUT: Duration = Duration::from_secs(2);

/// Loop-mounted ext4 images, one per volume.
#[derive(Debug)]
pub struct LoopImage {
    store: Store,
    mkfs: PathBuf,
}

impl LoopImage {
    /// Opens `store` for loop images, failing with what is missing if they cannot work here.
    pub fn open(store: &Path) -> Result<Self> {
        Self::with_probe(&crate::probe(store, &Options::default())?)
    }

    pub(crate) fn with_probe(probe: &Probe) -> Result<Self> {
        let mkfs = probe
            .loop_image
            .clone()
            .map_err(|m| Error::unsupported(Backend::Loop, m))?;
        let store = Store::open(&probe.store)?;
        store.ensure(&[&store.images, &store.volumes, &store.state])?;
        Ok(LoopImage { store, mkfs })
    }

    /// The store's canonical path.
    pub fn store(&self) -> &Path {
        &self.store.root
    }
}

impl QuotaBackend for LoopImage {
    fn backend(&self) -> Backend {
        Backend::Loop
    }

    fn create(&self, id: &str, limits: &Limits, owner: Owner) -> Result<Volume> {
        self.create_volume(id, limits, owner)
    }

    fn usage(&self, id: &str) -> Result<Usage> {
        volume_id::check(id)?;
        let state = self.store.read_state(id)?.ok_or_else(|| Error::NotFound {
            id: id.to_string(),
            store: self.store.root.clone(),
        })?;
        let target = self.store.volume(id);
        let st = statfs(&target).map_err(|e| Error::io("statfs", &target, e))?;
        // Below an unmounted image is the store's own filesystem: its numbers would be wrong.
        let mounted = st.fs_type == EXT4_SUPER_MAGIC
            && match (fs::metadata(&target), fs::metadata(&self.store.volumes)) {
                (Ok(t), Ok(v)) => t.dev() != v.dev(),
                _ => false,
            };
        if !mounted {
            return Err(Error::Image {
                image: self.store.image(id),
                reason: format!("not mounted at {}", target.display()),
            });
        }
        let limits = state.limits;
        Ok(Usage {
            bytes_used: limits.bytes.saturating_sub(st.bytes_available()),
            bytes_limit: limits.bytes,
            inodes_used: limits.inodes.saturating_sub(st.files_free),
            inodes_limit: limits.inodes,
        })
    }

    fn remove(&self, id: &str) -> Result<()> {
        self.remove_volume(id)
    }

    fn list(&self) -> Result<Vec<String>> {
        self.store.ids()
    }
}
