//! The crate's error type: every variant names the step and the path, and an unsupported backend
//! says exactly what is missing, so that one line tells an operator what to fix.

use std::fmt;
use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::Backend;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the quota crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid volume id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("invalid size {value:?}: {reason}")]
    InvalidSize { value: String, reason: String },
    #[error("invalid quota backend {0:?}: use loop or project")]
    InvalidBackend(String),
    #[error("no quota backend works for store {store}: project quota: {project}; loop images: {loop_image}")]
    NoBackend {
        store: PathBuf,
        project: Box<Missing>,
        loop_image: Box<Missing>,
    },
    #[error("invalid {what} {value}: {reason}")]
    InvalidLimit {
        what: &'static str,
        value: u64,
        reason: String,
    },
    #[error("volume {id} already exists in {store} ({what} is there); remove it first")]
    Exists {
        id: String,
        store: PathBuf,
        what: PathBuf,
    },
    #[error("volume {id} does not exist in {store}")]
    NotFound { id: String, store: PathBuf },
    #[error("{backend} quota backend unavailable: {missing}")]
    Unsupported {
        backend: Backend,
        missing: Box<Missing>,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mkfs.ext4 on {image} failed ({status}): {stderr}")]
    Mkfs {
        image: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("ext4 image {image}: {reason}")]
    Image { image: PathBuf, reason: String },
    #[error("loop device {device} still holds {image}: {reason}")]
    LoopBusy {
        device: PathBuf,
        image: PathBuf,
        reason: String,
    },
    #[error("{op} {path} (quota id {id}): {reason}")]
    Quota {
        op: &'static str,
        path: PathBuf,
        id: u32,
        reason: QuotaFailure,
    },
    #[error("set project id {id} on {path}: {reason}")]
    ProjectId {
        path: PathBuf,
        id: u32,
        reason: QuotaFailure,
    },
    #[error("no free project id in {first}..={last} (leases in {leases})")]
    ProjectIdsExhausted {
        first: u32,
        last: u32,
        leases: PathBuf,
    },
    #[error("state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn errno(op: &'static str, path: impl Into<PathBuf>, errno: Errno) -> Self {
        Error::io(op, path, io::Error::from_raw_os_error(errno as i32))
    }

    pub(crate) fn unsupported(backend: Backend, missing: Missing) -> Self {
        Error::Unsupported {
            backend,
            missing: Box::new(missing),
        }
    }
}

/// What a backend needs and this node lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    #[error("needs CAP_SYS_ADMIN (run as root) to {what}")]
    Privilege { what: &'static str },
    #[error(
        "{path} cannot be opened ({reason}): the kernel needs loop devices (CONFIG_BLK_DEV_LOOP)"
    )]
    LoopControl { path: PathBuf, reason: String },
    #[error("mkfs.ext4 not found in PATH, /usr/sbin or /sbin (install e2fsprogs)")]
    Mkfs,
    #[error("the kernel has no ext4 (not listed in /proc/filesystems)")]
    Ext4,
    #[error("no mount found for {path} in /proc/self/mountinfo")]
    Mount { path: PathBuf },
    #[error(
        "filesystem at {path} is {fs_type} ({device} on {mount_point}); project quota needs ext4 or xfs"
    )]
    FsType {
        path: PathBuf,
        fs_type: String,
        device: String,
        mount_point: PathBuf,
    },
    #[error(
        "filesystem at {path} is not mounted with {option} ({fs_type} {device} on {mount_point}, options {options})"
    )]
    MountOption {
        path: PathBuf,
        option: &'static str,
        fs_type: String,
        device: String,
        mount_point: PathBuf,
        options: String,
    },
    #[error("{kind} quota on {mount_point} is not usable: quotactl {reason}")]
    Quotactl {
        kind: &'static str,
        mount_point: PathBuf,
        reason: QuotaFailure,
    },
    #[error("{kind} quota on {mount_point} is accounted but not enforced")]
    NotEnforced {
        kind: &'static str,
        mount_point: PathBuf,
    },
}

/// Why a quotactl or project-id call failed, mapped from its errno (see [`QuotaFailure::from_errno`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaFailure {
    /// ENOSYS: the kernel (CONFIG_QUOTA off) or the filesystem has no quotactl.
    NoKernelSupport,
    /// ESRCH: quota of this type is not turned on for the filesystem.
    NotEnabled,
    /// EPERM/EACCES: needs CAP_SYS_ADMIN.
    Permission(Errno),
    /// EINVAL/EOPNOTSUPP/ENOTTY: the filesystem does not support the operation or type.
    Unsupported(Errno),
    /// ENOTBLK/ENODEV/ENOENT/ENXIO: the device named for quotactl is not the filesystem's.
    Device(Errno),
    /// Anything else, kept as is.
    Other(Errno),
}

impl QuotaFailure {
    /// Maps an errno of quotactl(2), quotactl_fd(2) or FS_IOC_FSSETXATTR to what it means.
    pub fn from_errno(errno: Errno) -> Self {
        match errno {
            Errno::ENOSYS => QuotaFailure::NoKernelSupport,
            Errno::ESRCH => QuotaFailure::NotEnabled,
            Errno::EPERM | Errno::EACCES => QuotaFailure::Permission(errno),
            Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOTTY => QuotaFailure::Unsupported(errno),
            Errno::ENOTBLK | Errno::ENODEV | Errno::ENOENT | Errno::ENXIO => {
                QuotaFailure::Device(errno)
            }
            other => QuotaFailure::Other(other),
        }
    }
}

impl fmt::Display for QuotaFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaFailure::NoKernelSupport => {
                f.write_str("no quota support in the kernel or this filesystem (ENOSYS)")
            }
            QuotaFailure::NotEnabled => f.write_str(
                "quota of this type is not turned on (ESRCH: mount with prjquota/usrquota)",
            ),
            QuotaFailure::Permission(e) => {
                write!(f, "permission denied, needs CAP_SYS_ADMIN ({e})")
            }
            QuotaFailure::Unsupported(e) => {
                write!(f, "the filesystem does not support this operation ({e})")
            }
            QuotaFailure::Device(e) => write!(f, "the quota device is not usable ({e})"),
            QuotaFailure::Other(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(
            QuotaFailure::from_errno(Errno::ENOSYS),
            QuotaFailure::NoKernelSupport
        );
        assert_eq!(
            QuotaFailure::from_errno(Errno::ESRCH),
            QuotaFailure::NotEnabled
        );
        assert_eq!(
            QuotaFailure::from_errno(Errno::EPERM),
            QuotaFailure::Permission(Errno::EPERM)
        );
        assert_eq!(
            QuotaFailure::from_errno(Errno::ENOTTY),
            QuotaFailure::Unsupported(Errno::ENOTTY)
        );
        assert_eq!(
            QuotaFailure::from_errno(Errno::ENOTBLK),
            QuotaFailure::Device(Errno::ENOTBLK)
        );
        assert_eq!(
            QuotaFailure::from_errno(Errno::EIO),
            QuotaFailure::Other(Errno::EIO)
        );
    }

    #[test]
    fn messages_say_what_is_missing() {
        let e = Error::unsupported(
            Backend::Project,
            Missing::MountOption {
                path: "/var/lib/paddock".into(),
                option: "prjquota",
                fs_type: "ext4".into(),
                device: "/dev/vda".into(),
                mount_point: "/".into(),
                options: "rw,discard".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "project quota backend unavailable: filesystem at /var/lib/paddock is not mounted \
             with prjquota (ext4 /dev/vda on /, options rw,discard)"
        );
        let e = Error::Quota {
            op: "Q_SETQUOTA",
            path: "/srv".into(),
            id: 7,
            reason: QuotaFailure::from_errno(Errno::ESRCH),
        };
        assert!(e.to_string().contains("ESRCH"), "{e}");
    }
}
