//! remove: unmount (lazily if busy) → unbind any loop device still backed by OUR image →
//! delete the image, the mount point, the state. Each step tolerates finding its work done, so
//! remove finishes whatever a crash left, by id alone.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use super::{LoopImage, DETACH_TIMEOUT};
use crate::error::{Error, Result};
use crate::{loop_device, mountinfo, store, volume_id};

/// Mounts stacked on one mount point that remove will take off before giving up.
const MAX_STACKED: usize = 16;

impl LoopImage {
    pub(super) fn remove_volume(&self, id: &str) -> Result<()> {
        volume_id::check(id)?;
        let target = self.store.volume(id);
        let image = self.store.image(id);
        unmount_all(&target)?;
        for device in loop_device::bound_to(&image)? {
            loop_device::detach(&device, DETACH_TIMEOUT)?;
        }
        store::remove_file(&image)?;
        // Never descend into a filesystem that is still (or again) mounted there.
        if let (Ok(t), Ok(v)) = (fs::metadata(&target), fs::metadata(&self.store.volumes)) {
            if t.dev() != v.dev() {
                return Err(Error::io(
                    "remove",
                    &target,
                    std::io::Error::other("still a mount point after unmounting"),
                ));
            }
        }
        store::remove_dir_all(&target)?;
        self.store.remove_state(id)
    }
}

/// Unmounts everything mounted on `target`; a busy mount is detached lazily (its loop device
/// then stays bound until its last user lets go, which remove reports).
fn unmount_all(target: &Path) -> Result<()> {
    for _ in 0..MAX_STACKED {
        if !mountinfo::read()?.iter().any(|m| m.mount_point == target) {
            return Ok(());
        }
        match umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => {}
            Err(Errno::EBUSY) => {
                tracing::warn!(target = %target.display(), "busy, unmounting lazily");
                umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                    .map_err(|e| Error::errno("umount (detach)", target, e))?;
            }
            // Unmounted by someone else since mountinfo was read.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::errno("umount", target, e)),
        }
    }
    Err(Error::io(
        "umount",
        target,
        std::io::Error::other(format!("still mounted after {MAX_STACKED} unmounts")),
    ))
}
