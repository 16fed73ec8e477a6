//! Which backend works for a store: the filesystem holding it (statfs + mountinfo), its type
//! and quota mount options, whether quotactl enforces project quota there; and for loop images,
//! privilege, `/dev/loop-control` and mkfs.ext4. The decisions are pure functions over what was
//! read, so they are tested without root.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::error::{Error, Missing, QuotaFailure, Result};
use crate::mountinfo::{self, Mount};
use crate::quotactl::{self, Target};
use crate::statfs::{statfs, EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC};
use crate::store::Store;
use crate::{ext4, Backend, Options};

const CAP_SYS_ADMIN: u32 = 21;

/// The filesystems project quota works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaFs {
    Ext4,
    Xfs,
}

/// What [`probe`] found.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The store, canonical.
    pub store: PathBuf,
    /// The mount holding it.
    pub mount: Option<Mount>,
    /// Whether project quota works there, or what is missing.
    pub project: Result<QuotaFs, Missing>,
    /// Whether loop images work (the mkfs.ext4 to use), or what is missing.
    pub loop_image: Result<PathBuf, Missing>,
}

impl Probe {
    /// The backend to use: `forced` if it works, else project quota if it works, else loop
    /// images.
    pub fn choose(&self, forced: Option<Backend>) -> Result<Backend> {
        match forced {
            Some(Backend::Project) => self
                .project
                .clone()
                .map(|_| Backend::Project)
                .map_err(|m| Error::unsupported(Backend::Project, m)),
            Some(Backend::Loop) => self
                .loop_image
                .clone()
                .map(|_| Backend::Loop)
                .map_err(|m| Error::unsupported(Backend::Loop, m)),
            None => match (&self.project, &self.loop_image) {
                (Ok(_), _) => Ok(Backend::Project),
                (_, Ok(_)) => Ok(Backend::Loop),
                (Err(p), Err(l)) => Err(Error::NoBackend {
                    store: self.store.clone(),
                    project: Box::new(p.clone()),
                    loop_image: Box::new(l.clone()),
                }),
            },
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store {}", self.store.display())?;
        if let Some(m) = &self.mount {
            write!(
                f,
                " ({} {} on {}, options {})",
                m.fs_type,
                m.source,
                m.mount_point.display(),
                m.super_options
            )?;
        }
        match &self.project {
            Ok(fs) => write!(f, "; project quota: yes ({fs:?})")?,
            Err(m) => write!(f, "; project quota: no, {m}")?,
        }
        match &self.loop_image {
            Ok(_) => write!(f, "; loop images: yes"),
            Err(m) => write!(f, "; loop images: no, {m}"),
        }
    }
}

/// Looks at `store` (created if missing) and says which backends work there.
pub fn probe(store: &Path, options: &Options) -> Result<Probe> {
    let store = Store::open(store)?.root;
    let meta = fs::metadata(&store).map_err(|e| Error::io("stat", &store, e))?;
    let dev = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let fs_type = statfs(&store)
        .map_err(|e| Error::io("statfs", &store, e))?
        .fs_type;
    let mounts = mountinfo::read()?;
    let mount = holding_mount(&mounts, &store, dev).cloned();
    let admin = has_cap_sys_admin();
    let project = project_support(
        &store,
        mount.as_ref(),
        fs_type,
        options.user_quota,
        admin,
        |m| {
            Target::open(&m.mount_point, &m.source)
                .map_err(|_| Errno::EBADF)?
                .state()
        },
    );
    let loop_image = loop_support(admin);
    Ok(Probe {
        store,
        mount,
        project,
        loop_image,
    })
}

/// The mount holding `path`: the deepest mount point above it, preferring one whose device is
/// the path's (the last one listed wins among stacked mounts).
fn holding_mount<'a>(mounts: &'a [Mount], path: &Path, dev: (u32, u32)) -> Option<&'a Mount> {
    let same_dev: Vec<Mount> = mounts.iter().filter(|m| m.dev == dev).cloned().collect();
    let best = mountinfo::containing(&same_dev, path).map(|m| m.mount_point.clone());
    match best {
        Some(mp) => mounts
            .iter()
            .rev()
            .find(|m| m.dev == dev && m.mount_point == mp),
        None => mountinfo::containing(mounts, path),
    }
}

/// Decides whether project quota works on the filesystem holding `path`; `quota_state` runs
/// Q_XGETQSTATV there and is only called once the mount options look right.
// Runs once per probe: a large Err costs nothing here.
#[allow(clippy::result_large_err)]
pub(crate) fn project_support(
    path: &Path,
    mount: Option<&Mount>,
    fs_magic: u64,
    user_quota: bool,
    admin: bool,
    quota_state: impl FnOnce(&Mount) -> Result<u16, Errno>,
) -> Result<QuotaFs, Missing> {
    let Some(m) = mount else {
        return Err(Missing::Mount {
            path: path.to_path_buf(),
        });
    };
    let fs = match fs_magic {
        EXT4_SUPER_MAGIC if m.fs_type == "ext4" => QuotaFs::Ext4,
        XFS_SUPER_MAGIC => QuotaFs::Xfs,
        _ => {
            return Err(Missing::FsType {
                path: path.to_path_buf(),
                fs_type: m.fs_type.clone(),
                device: m.source.clone(),
                mount_point: m.mount_point.clone(),
            })
        }
    };
    let missing_option = |option| Missing::MountOption {
        path: path.to_path_buf(),
        option,
        fs_type: m.fs_type.clone(),
        device: m.source.clone(),
        mount_point: m.mount_point.clone(),
        options: m.super_options.clone(),
    };
    if !(m.has_option("prjquota") || m.has_option("pquota")) {
        return Err(missing_option("prjquota"));
    }
    let user_option = m.has_option("usrquota")
        || m.has_option("uquota")
        || m.has_option("quota")
        || m.super_options
            .split(',')
            .any(|o| o.starts_with("usrjquota="));
    if user_quota && !user_option {
        return Err(missing_option("usrquota"));
    }
    let flags = quota_state(m).map_err(|e| Missing::Quotactl {
        kind: "project",
        mount_point: m.mount_point.clone(),
        reason: QuotaFailure::from_errno(e),
    })?;
    for (wanted, enforced, accounted, kind) in [
        (
            true,
            quotactl::FS_QUOTA_PDQ_ENFD,
            quotactl::FS_QUOTA_PDQ_ACCT,
            "project",
        ),
        (
            user_quota,
            quotactl::FS_QUOTA_UDQ_ENFD,
            quotactl::FS_QUOTA_UDQ_ACCT,
            "user",
        ),
    ] {
        if wanted && flags & enforced == 0 {
            let mount_point = m.mount_point.clone();
            return Err(if flags & accounted != 0 {
                Missing::NotEnforced { kind, mount_point }
            } else {
                Missing::Quotactl {
                    kind,
                    mount_point,
                    reason: QuotaFailure::NotEnabled,
                }
            });
        }
    }
    if !admin {
        return Err(Missing::Privilege {
            what: "set quota limits and project ids",
        });
    }
    Ok(fs)
}

#[allow(clippy::result_large_err)]
fn loop_support(admin: bool) -> Result<PathBuf, Missing> {
    if !admin {
        return Err(Missing::Privilege {
            what: "attach loop devices and mount",
        });
    }
    let control = Path::new("/dev/loop-control");
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(control)
        .map_err(|e| Missing::LoopControl {
            path: control.to_path_buf(),
            reason: e.to_string(),
        })?;
    ext4::find_mkfs().ok_or(Missing::Mkfs)
}

fn has_cap_sys_admin() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| cap_effective(&s, CAP_SYS_ADMIN))
        .unwrap_or(false)
}

/// Whether the `CapEff:` line of /proc/self/status has capability `bit`.
pub(crate) fn cap_effective(status: &str, bit: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mount(fs_type: &str, options: &str) -> Mount {
        mountinfo::parse(&format!(
            "27 1 254:0 / / rw,relatime - {fs_type} /dev/vda {options}\n"
        ))
        .remove(0)
    }

    fn never(_: &Mount) -> Result<u16, Errno> {
        panic!("quotactl must not be asked")
    }

    const PATH: &str = "/var/lib/paddock";

    #[test]
    fn ext4_without_prjquota_says_so() {
        let m = mount("ext4", "rw,discard");
        let e = project_support(
            Path::new(PATH),
            Some(&m),
            EXT4_SUPER_MAGIC,
            false,
            true,
            never,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "filesystem at /var/lib/paddock is not mounted with prjquota (ext4 /dev/vda on /, \
             options rw,discard)"
        );
    }

    #[test]
    fn wrong_filesystem() {
        let m = mount("tmpfs", "rw");
        let e = project_support(Path::new(PATH), Some(&m), 0x0102_1994, false, true, never)
            .unwrap_err();
        assert!(matches!(e, Missing::FsType { .. }), "{e}");
        assert!(e.to_string().contains("is tmpfs"));
        let e = project_support(Path::new(PATH), None, EXT4_SUPER_MAGIC, false, true, never)
            .unwrap_err();
        assert!(matches!(e, Missing::Mount { .. }));
    }

    #[test]
    fn quotactl_decides_once_options_are_right() {
        let m = mount("ext4", "rw,prjquota");
        let p = Path::new(PATH);
        let enforced = |_: &Mount| Ok(quotactl::FS_QUOTA_PDQ_ACCT | quotactl::FS_QUOTA_PDQ_ENFD);
        assert_eq!(
            project_support(p, Some(&m), EXT4_SUPER_MAGIC, false, true, enforced),
            Ok(QuotaFs::Ext4)
        );
        let e = project_support(p, Some(&m), EXT4_SUPER_MAGIC, false, true, |_| {
            Ok(quotactl::FS_QUOTA_PDQ_ACCT)
        })
        .unwrap_err();
        assert!(matches!(e, Missing::NotEnforced { .. }), "{e}");
        let e = project_support(p, Some(&m), EXT4_SUPER_MAGIC, false, true, |_| {
            Err(Errno::ENOSYS)
        })
        .unwrap_err();
        assert!(e.to_string().contains("ENOSYS"), "{e}");
        let e = project_support(p, Some(&m), EXT4_SUPER_MAGIC, false, false, enforced).unwrap_err();
        assert!(matches!(e, Missing::Privilege { .. }), "{e}");
        // User quota asked for: the option and the enforcement are checked too.
        let e = project_support(p, Some(&m), EXT4_SUPER_MAGIC, true, true, enforced).unwrap_err();
        assert!(e.to_string().contains("not mounted with usrquota"), "{e}");
        let mu = mount("ext4", "rw,usrquota,prjquota");
        let e = project_support(p, Some(&mu), EXT4_SUPER_MAGIC, true, true, enforced).unwrap_err();
        assert!(e.to_string().contains("user quota"), "{e}");
    }

    #[test]
    fn xfs_pquota() {
        let m = mount("xfs", "rw,attr2,inode64,logbufs=8,prjquota");
        let ok = |_: &Mount| Ok(quotactl::FS_QUOTA_PDQ_ENFD);
        assert_eq!(
            project_support(Path::new(PATH), Some(&m), XFS_SUPER_MAGIC, false, true, ok),
            Ok(QuotaFs::Xfs)
        );
        let m = mount("xfs", "rw,pqnoenforce");
        assert!(project_support(
            Path::new(PATH),
            Some(&m),
            XFS_SUPER_MAGIC,
            false,
            true,
            never
        )
        .is_err());
    }

    #[test]
    fn choose_honours_the_operator() {
        let p = Probe {
            store: PATH.into(),
            mount: None,
            project: Err(Missing::Mkfs),
            loop_image: Ok("/sbin/mkfs.ext4".into()),
        };
        assert_eq!(p.choose(None).unwrap(), Backend::Loop);
        assert_eq!(p.choose(Some(Backend::Loop)).unwrap(), Backend::Loop);
        let e = p.choose(Some(Backend::Project)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("project quota backend unavailable: "),
            "{e}"
        );
        let p = Probe {
            project: Ok(QuotaFs::Xfs),
            ..p
        };
        assert_eq!(p.choose(None).unwrap(), Backend::Project);
        let p = Probe {
            project: Err(Missing::Ext4),
            loop_image: Err(Missing::Mkfs),
            ..p
        };
        assert!(matches!(p.choose(None), Err(Error::NoBackend { .. })));
    }

    #[test]
    fn capabilities() {
        let s = "Name:\tx\nCapPrm:\t0\nCapEff:\t000001fffeffffff\n";
        assert!(cap_effective(s, CAP_SYS_ADMIN));
        assert!(!cap_effective(s, 24)); // CAP_SYS_RESOURCE is dropped on this machine kind
        assert!(!cap_effective("CapEff:\t0000000000000000\n", CAP_SYS_ADMIN));
        assert!(!cap_effective("", CAP_SYS_ADMIN));
    }

    #[test]
    fn stacked_mounts_and_devices() {
        let m = mountinfo::parse(
            "1 0 254:0 / / rw - ext4 /dev/vda rw\n\
             2 1 8:1 / /srv rw - xfs /dev/sdb rw,prjquota\n\
             3 1 0:40 / /srv rw - tmpfs tmpfs rw\n",
        );
        let h = holding_mount(&m, Path::new("/srv/quota"), (8, 1)).unwrap();
        assert_eq!(h.source, "/dev/sdb");
        let h = holding_mount(&m, Path::new("/srv/quota"), (9, 9)).unwrap();
        assert_eq!(h.source, "tmpfs");
    }
}
