//! Processes exec'd into a sandbox with a user namespace (`io.paddock.userns=true`) must run in
//! that namespace: container root is then the range's base on the host, like the sandbox's own
//! process. libcontainer's tenant (`exec`) joins every namespace of the init except its user
//! namespace, so without this an exec'd "uid 0" would be host uid 0: the owner of the rootfs's
//! files, outside every `user:<base>:---` deny entry. paddock therefore joins the init's user
//! namespace itself before libcontainer starts the tenant.
//!
//! After `setns` the caller keeps its host uid (0, unmapped inside, shown as the overflow uid)
//! and holds every capability in the sandbox's namespace, none on the host: enough to join the
//! sandbox's other namespaces (owned by its user namespace) and to switch to container ids; the
//! tenant then runs as the spec's user there (container root = the range's base), with the
//! sandbox's capability sets (none).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

use crate::error::{Error, Result};

/// A namespace as the kernel names it: the device and inode of its `/proc/<pid>/ns/` link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

/// The user namespace `link` (a `/proc/<pid>/ns/user`) stands for.
pub fn ns_id(link: &Path) -> Result<NsId> {
    let m = std::fs::metadata(link).map_err(|e| Error::io("stat", link, e))?;
    Ok(NsId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// `/proc/<pid>/ns/user`.
pub fn link_of(pid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/user"))
}

/// Moves the calling process into the user namespace of `init` (a sandbox's init) when it is
/// not already in it; returns whether it moved. The kernel refuses this to a multithreaded
/// process (EINVAL): call it from a single-threaded one (the `paddock` command is).
pub fn join_of(init: i32) -> Result<bool> {
    let target = link_of(init);
    let own = ns_id(Path::new("/proc/self/ns/user"))?;
    let theirs = ns_id(&target)?;
    if own == theirs {
        return Ok(false);
    }
    let file = File::open(&target).map_err(|e| Error::io("open", &target, e))?;
    // The link is checked again through the open descriptor: the init may have exited and its
    // pid been reused between the stat and the open.
    let opened = file.metadata().map_err(|e| Error::io("stat", &target, e))?;
    if (opened.dev(), opened.ino()) != (theirs.dev, theirs.ino) {
        return Err(Error::Invalid(format!(
            "the sandbox's init {init} changed while its user namespace was being joined"
        )));
    }
    nix::sched::setns(&file, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| Error::sys("setns into the sandbox's user namespace", e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_namespace_is_not_joined_again() {
        let me = i32::try_from(std::process::id()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!join_of(me).unwrap_or_else(|e| panic!("{e}")));
        assert!(join_of(i32::MAX).is_err(), "no such process");
    }
}
