//! create: image → mkfs → loop device → mount → root dir for the owner → exact byte limit →
//! state file. Any failure removes what was made.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, MsFlags};

use super::LoopImage;
use crate::error::{Error, Result};
use crate::ext4::{self, Geometry};
use crate::statfs::statfs;
use crate::store::{self, State};
use crate::{loop_device, size, volume_id, Backend, Limits, Owner, QuotaBackend, Volume};

/// mkfs attempts: the plan is checked against the superblock and grown if mkfs gave less.
const MKFS_ATTEMPTS: usize = 3;

impl LoopImage {
    pub(super) fn create_volume(&self, id: &str, limits: &Limits, owner: Owner) -> Result<Volume> {
        volume_id::check(id)?;
        limits.validate()?;
        if let Some(what) = self.store.any_artifact(id) {
            return Err(Error::Exists {
                id: id.to_string(),
                store: self.store.root.clone(),
                what,
            });
        }
        self.check_space(limits.bytes)?;
        self.build(id, limits, owner).inspect_err(|_| {
            if let Err(e) = self.remove(id) {
                tracing::warn!(id, error = %e, "cleanup after a failed create");
            }
        })
    }

    fn build(&self, id: &str, limits: &Limits, owner: Owner) -> Result<Volume> {
        let image = self.store.image(id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&image)
            .map_err(|e| Error::io("create", &image, e))?;
        let geometry = self.make_fs(&image, &file, limits)?;
        let attached = loop_device::attach(&image, &file)?;
        drop(file);

        let target = self.store.volume(id);
        DirBuilder::new()
            .mode(0o700)
            .create(&target)
            .map_err(|e| Error::io("mkdir", &target, e))?;
        mount(
            Some(&attached.device),
            &target,
            Some("ext4"),
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            None::<&str>,
        )
        .map_err(|e| Error::errno("mount", &target, e))?;
        let device = attached.device.clone();
        // The mount holds the device now; with autoclear it unbinds on the last unmount.
        drop(attached);

        prepare_root(&target, owner)?;
        let enforced = exact_limit(&device, &target, &geometry)?;
        self.store.write_state(&State {
            id: id.to_string(),
            backend: Backend::Loop,
            path: target.clone(),
            requested: *limits,
            limits: enforced,
            owner,
            project_id: None,
            user_quota: false,
        })?;
        Ok(Volume {
            id: id.to_string(),
            path: target,
            backend: Backend::Loop,
            limits: enforced,
        })
    }

    /// Sizes the (sparse) image, runs mkfs and checks in the superblock that the data, the
    /// kernel's reserve and the inodes fit; grows the image if they do not.
    fn make_fs(&self, image: &Path, file: &File, limits: &Limits) -> Result<Geometry> {
        let mut g = ext4::geometry(limits);
        for _ in 0..MKFS_ATTEMPTS {
            // Truncating to 0 first keeps the file all holes: mkfs may skip zeroing.
            file.set_len(0)
                .and_then(|()| file.set_len(g.bytes()))
                .map_err(|e| Error::io("truncate", image, e))?;
            ext4::mkfs(&self.mkfs, image, &g)?;
            let sb = ext4::read_superblock(image)?;
            let need = g.data_blocks + ext4::default_reserve(sb.blocks);
            let inodes_ok = sb.inodes >= g.inodes;
            if sb.block_size == ext4::BLOCK && sb.free_blocks >= need && inodes_ok {
                return Ok(g);
            }
            tracing::debug!(?g, ?sb, need, "mkfs.ext4 gave less than planned, growing");
            g.blocks += need.saturating_sub(sb.free_blocks) + 64;
        }
        Err(Error::Image {
            image: image.to_path_buf(),
            reason: format!(
                "mkfs.ext4 gave fewer free blocks or inodes than {} bytes and {} inodes need \
                 after {MKFS_ATTEMPTS} attempts (block size must be 4096)",
                limits.bytes, limits.inodes
            ),
        })
    }

    /// Refuses a limit larger than the store's free space less what the images already there
    /// may still grow into (they are sparse).
    fn check_space(&self, bytes: u64) -> Result<()> {
        let st =
            statfs(&self.store.images).map_err(|e| Error::io("statfs", &self.store.images, e))?;
        let mut committed = 0u64;
        for name in store::names(&self.store.images)? {
            if let Ok(m) = fs::metadata(self.store.images.join(&name)) {
                committed += m.len().saturating_sub(m.blocks() * 512);
            }
        }
        size::fits(
            bytes,
            st.bytes_available().saturating_sub(committed),
            &self.store.root,
        )
    }
}

/// The volume's root: no lost+found (the app sees an empty directory, and gets the inode
/// back), owned by the instance, mode 0700.
fn prepare_root(target: &Path, owner: Owner) -> Result<()> {
    let lost = target.join("lost+found");
    match fs::remove_dir(&lost) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io("remove", lost, e))
        }
        _ => {}
    }
    std::os::unix::fs::chown(target, Some(owner.uid), Some(owner.gid))
        .map_err(|e| Error::io("chown", target, e))?;
    fs::set_permissions(target, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("chmod", target, e))
}

/// Raises the kernel's reserve so that exactly the requested data blocks are available to
/// writers, and returns the limits the volume enforces. If the reserve cannot be raised (no
/// sysfs knob), the limit is what mkfs left, a little above the request.
fn exact_limit(device: &Path, target: &Path, g: &Geometry) -> Result<Limits> {
    let st = statfs(target).map_err(|e| Error::io("statfs", target, e))?;
    let reserve = st.blocks_free.saturating_sub(g.data_blocks);
    let kernel_reserve = st.blocks_free.saturating_sub(st.blocks_available);
    if reserve > kernel_reserve {
        if let Err(e) = ext4::set_reserve(device, reserve) {
            tracing::warn!(error = %e, "byte limit left {} blocks above the request", reserve - kernel_reserve);
        }
    }
    let st = statfs(target).map_err(|e| Error::io("statfs", target, e))?;
    Ok(Limits {
        bytes: st.bytes_available(),
        inodes: st.files_free,
    })
}
