//! paddock's per-instance disk quotas.
//!
//! Every instance gets a *volume*: a host directory, owned by the instance's uid/gid with mode
//! 0700, that the runtime bind-mounts into the sandbox, and that holds at most so many bytes
//! and inodes. Two backends do it behind one trait, [`QuotaBackend`]:
//!
//! - [`ProjectQuota`]: a directory on the store's filesystem (ext4 or XFS mounted with
//!   `prjquota`) tagged with a project id that new files inherit, limits set with quotactl.
//!   Writes past the limit fail with EDQUOT (XFS: ENOSPC).
//! - [`LoopImage`]: a fixed-size ext4 image per volume, loop-mounted. Writes past the limit
//!   fail with ENOSPC. For kernels and filesystems without quota support.
//!
//! [`probe`] looks at the store's filesystem and says which backends work and, for those that
//! do not, exactly what is missing; [`open`] picks one (or the one the operator forces).
//!
//! Every volume's files live under the store and are named after its id, so `remove(id)` in a
//! fresh process finishes whatever a crashed `create` or `remove` left.
//!
//! ```no_run
//! use paddock_quota::{open, Limits, Options, Owner};
//!
//! let quotas = open("/var/lib/paddock/quota".as_ref(), None, &Options::default())?;
//! let limits = Limits::parse("512M", "10000")?;
//! let volume = quotas.create("web-0", &limits, Owner { uid: 20001, gid: 20001 })?;
//! // bind-mount volume.path into the sandbox at /home/vcap ...
//! let usage = quotas.usage("web-0")?;
//! println!("{} of {} bytes", usage.bytes_used, usage.bytes_limit);
//! quotas.remove("web-0")?;
//! # Ok::<(), paddock_quota::Error>(())
//! ```

mod error;
mod ext4;
mod fsxattr;
pub mod loop_device;
mod loop_image;
pub mod mountinfo;
mod probe;
mod project;
mod quotactl;
mod size;
mod statfs;
mod store;
mod tree;
pub mod volume_id;

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use error::{Error, Missing, QuotaFailure, Result};
pub use loop_image::LoopImage;
pub use probe::{probe, Probe, QuotaFs};
pub use project::ProjectQuota;
pub use size::{check_fits, format_size, parse_inodes, parse_size};
pub use tree::{TreeLimit, TreeQuota};

/// The two ways of limiting a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A fixed-size ext4 image per volume, loop-mounted.
    Loop,
    /// Project quota on the store's ext4/XFS filesystem.
    Project,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Loop => "loop",
            Backend::Project => "project",
        })
    }
}

impl FromStr for Backend {
    type Err = Error;

    /// `loop` or `project`, as in `/etc/paddock/config.toml`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "loop" => Ok(Backend::Loop),
            "project" => Ok(Backend::Project),
            _ => Err(Error::InvalidBackend(s.to_string())),
        }
    }
}

/// A volume's limits: bytes and inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub bytes: u64,
    pub inodes: u64,
}

impl Limits {
    /// The smallest volume: an ext4 image needs room for its metadata, and smaller makes no
    /// sense for an app's writable space.
    pub const MIN_BYTES: u64 = 1 << 20;
    /// ext4 counts inodes in 32 bits; keep clear of the top.
    pub const MAX_INODES: u64 = (u32::MAX as u64) - 1024;

    /// Checked limits.
    pub fn new(bytes: u64, inodes: u64) -> Result<Self> {
        let l = Limits { bytes, inodes };
        l.validate()?;
        Ok(l)
    }

    /// Limits from their textual forms: `parse("512M", "10000")`.
    pub fn parse(bytes: &str, inodes: &str) -> Result<Self> {
        Self::new(parse_size(bytes)?, parse_inodes(inodes)?)
    }

    pub fn validate(&self) -> Result<()> {
        if self.bytes < Self::MIN_BYTES {
            return Err(Error::InvalidLimit {
                what: "disk limit",
                value: self.bytes,
                reason: format!(
                    "{} is below the minimum of {}",
                    format_size(self.bytes),
                    format_size(Self::MIN_BYTES)
                ),
            });
        }
        if self.inodes == 0 || self.inodes > Self::MAX_INODES {
            return Err(Error::InvalidLimit {
                what: "inode limit",
                value: self.inodes,
                reason: format!("must be between 1 and {}", Self::MAX_INODES),
            });
        }
        Ok(())
    }
}

/// Who owns a volume's root directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// A volume ready to be bind-mounted into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub id: String,
    /// The host directory: its root belongs to the owner, mode 0700.
    pub path: PathBuf,
    pub backend: Backend,
    /// What the volume enforces: at least what was asked for. The loop backend enforces the
    /// bytes exactly (rounded up to 4 KiB) and rounds inodes up to whole inode-table blocks
    /// (16 per block group); project quota rounds bytes up to 1 KiB (XFS: 512 bytes).
    pub limits: Limits,
}

/// A volume's usage, as the kernel accounts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub bytes_used: u64,
    pub bytes_limit: u64,
    pub inodes_used: u64,
    pub inodes_limit: u64,
}

/// A per-instance disk quota backend.
///
/// Operations on one id are not safe against each other (the runtime serialises them per
/// sandbox); operations on different ids are, across threads and processes.
pub trait QuotaBackend: Send + Sync + fmt::Debug {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Makes volume `id` holding at most `limits`, its root owned by `owner` with mode 0700.
    /// Fails with [`Error::Exists`] if anything of `id` is in the store; on failure, removes
    /// what it made.
    fn create(&self, id: &str, limits: &Limits, owner: Owner) -> Result<Volume>;

    /// Current usage and limits of volume `id`.
    fn usage(&self, id: &str) -> Result<Usage>;

    /// Removes volume `id` and its limits, whatever state a crash left it in. Removing what
    /// does not exist succeeds.
    fn remove(&self, id: &str) -> Result<()>;

    /// Ids of every volume in the store, finished or half-made.
    fn list(&self) -> Result<Vec<String>>;
}

/// Node-level settings of the backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Project ids paddock may hand out (project backend).
    pub project_ids: RangeInclusive<u32>,
    /// Also put the volume's limits on the owner's uid as a user quota (project backend; the
    /// filesystem must be mounted with `usrquota` too).
    pub user_quota: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            // Clear of the ids Kubernetes' fsquota hands out (from 1048577 up).
            project_ids: 2_097_152..=3_145_727,
            user_quota: false,
        }
    }
}

/// Opens the store with the backend `forced` by the operator, or the best one that works
/// (project quota, else loop images). Forcing one that does not work is an error saying what
/// is missing.
pub fn open(
    store: &Path,
    forced: Option<Backend>,
    options: &Options,
) -> Result<Box<dyn QuotaBackend>> {
    let p = probe(store, options)?;
    Ok(match p.choose(forced)? {
        Backend::Loop => Box::new(LoopImage::with_probe(&p)?),
        Backend::Project => Box::new(ProjectQuota::with_probe(&p, options)?),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(
            Limits::parse("512M", "1000").unwrap(),
            Limits {
                bytes: 512 << 20,
                inodes: 1000
            }
        );
        let e = Limits::parse("64k", "10").unwrap_err().to_string();
        assert!(e.contains("64K is below the minimum of 1M"), "{e}");
        assert!(Limits::new(1 << 20, 0).is_err());
        assert!(Limits::new(1 << 20, 1 << 40).is_err());
        assert!(Limits::parse("1Q", "10")
            .unwrap_err()
            .to_string()
            .contains("\"1Q\""));
    }

    #[test]
    fn backend_names() {
        assert_eq!("loop".parse::<Backend>().unwrap(), Backend::Loop);
        assert_eq!("project".parse::<Backend>().unwrap(), Backend::Project);
        assert!("xfs".parse::<Backend>().is_err());
        assert_eq!(Backend::Project.to_string(), "project");
        assert_eq!(serde_json::to_string(&Backend::Loop).unwrap(), "\"loop\"");
    }
}
