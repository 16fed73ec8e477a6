//! quotactl(2): command encoding, the `if_dqblk` (generic, 1 KiB blocks) and `fs_disk_quota`
//! (XFS, 512-byte basic blocks) arguments, and the one thin call, through quotactl_fd(2) on
//! the filesystem where the kernel has it (5.14+), else quotactl(2) on its block device.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::error::{Error, QuotaFailure, Result};
use crate::{Limits, Usage};

// <linux/quota.h>
pub(crate) const USRQUOTA: u32 = 0;
pub(crate) const PRJQUOTA: u32 = 2;
const SUBCMDSHIFT: u32 = 8;
const SUBCMDMASK: u32 = 0xff;
pub(crate) const Q_GETQUOTA: u32 = 0x80_0007;
pub(crate) const Q_SETQUOTA: u32 = 0x80_0008;
/// Size unit of `if_dqblk`'s block limits.
pub(crate) const QIF_DQBLKSIZE: u64 = 1024;
const QIF_BLIMITS: u32 = 1;
const QIF_ILIMITS: u32 = 4;
const QIF_LIMITS: u32 = QIF_BLIMITS | QIF_ILIMITS;

// <linux/dqblk_xfs.h>
const fn xqm_cmd(x: u32) -> u32 {
    ((b'X' as u32) << 8) + x
}
pub(crate) const Q_XGETQUOTA: u32 = xqm_cmd(3);
pub(crate) const Q_XSETQLIM: u32 = xqm_cmd(4);
pub(crate) const Q_XGETQSTATV: u32 = xqm_cmd(8);
/// Size unit of `fs_disk_quota`'s block fields ("basic blocks").
pub(crate) const BBSIZE: u64 = 512;
const FS_DQUOT_VERSION: i8 = 1;
const FS_USER_QUOTA: i8 = 1;
const FS_PROJ_QUOTA: i8 = 2;
const FS_DQ_ISOFT: u16 = 1 << 0;
const FS_DQ_IHARD: u16 = 1 << 1;
const FS_DQ_BSOFT: u16 = 1 << 2;
const FS_DQ_BHARD: u16 = 1 << 3;
const FS_QSTATV_VERSION1: i8 = 1;
pub(crate) const FS_QUOTA_UDQ_ENFD: u16 = 1 << 1;
pub(crate) const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;
pub(crate) const FS_QUOTA_UDQ_ACCT: u16 = 1 << 0;
pub(crate) const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;

/// `QCMD(cmd, type)`: the command word quotactl takes.
pub(crate) const fn qcmd(cmd: u32, qtype: u32) -> i32 {
    ((cmd << SUBCMDSHIFT) | (qtype & SUBCMDMASK)) as i32
}

/// `struct if_dqblk`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IfDqblk {
    pub dqb_bhardlimit: u64,
    pub dqb_bsoftlimit: u64,
    pub dqb_curspace: u64,
    pub dqb_ihardlimit: u64,
    pub dqb_isoftlimit: u64,
    pub dqb_curinodes: u64,
    pub dqb_btime: u64,
    pub dqb_itime: u64,
    pub dqb_valid: u32,
}

/// `struct fs_disk_quota`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FsDiskQuota {
    pub d_version: i8,
    pub d_flags: i8,
    pub d_fieldmask: u16,
    pub d_id: u32,
    pub d_blk_hardlimit: u64,
    pub d_blk_softlimit: u64,
    pub d_ino_hardlimit: u64,
    pub d_ino_softlimit: u64,
    pub d_bcount: u64,
    pub d_icount: u64,
    pub d_itimer: i32,
    pub d_btimer: i32,
    pub d_iwarns: u16,
    pub d_bwarns: u16,
    pub d_itimer_hi: i8,
    pub d_btimer_hi: i8,
    pub d_rtbtimer_hi: i8,
    pub d_padding2: i8,
    pub d_rtb_hardlimit: u64,
    pub d_rtb_softlimit: u64,
    pub d_rtbcount: u64,
    pub d_rtbtimer: i32,
    pub d_rtbwarns: u16,
    pub d_padding3: i16,
    pub d_padding4: [u8; 8],
}

/// `struct fs_qfilestatv`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FsQfilestatv {
    pub qfs_ino: u64,
    pub qfs_nblks: u64,
    pub qfs_nextents: u32,
    pub qfs_pad: u32,
}

/// `struct fs_quota_statv`: which quota types are accounted and enforced.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FsQuotaStatv {
    pub qs_version: i8,
    pub qs_pad1: u8,
    pub qs_flags: u16,
    pub qs_incoredqs: u32,
    pub qs_uquota: FsQfilestatv,
    pub qs_gquota: FsQfilestatv,
    pub qs_pquota: FsQfilestatv,
    pub qs_btimelimit: i32,
    pub qs_itimelimit: i32,
    pub qs_rtbtimelimit: i32,
    pub qs_bwarnlimit: u16,
    pub qs_iwarnlimit: u16,
    pub qs_rtbwarnlimit: u16,
    pub qs_pad3: u16,
    pub qs_pad4: u32,
    pub qs_pad2: [u64; 7],
}

/// Bytes → 1 KiB quota blocks, rounded up so that at least `bytes` fit.
pub(crate) fn bytes_to_qif_blocks(bytes: u64) -> u64 {
    bytes.div_ceil(QIF_DQBLKSIZE)
}

/// Bytes → 512-byte basic blocks (XFS), rounded up.
pub(crate) fn bytes_to_basic_blocks(bytes: u64) -> u64 {
    bytes.div_ceil(BBSIZE)
}

/// The `Q_SETQUOTA` argument setting hard limits (no soft limits, no grace); `None` clears them.
pub(crate) fn dqblk_limits(limits: Option<&Limits>) -> IfDqblk {
    let (blocks, inodes) = limits.map_or((0, 0), |l| (bytes_to_qif_blocks(l.bytes), l.inodes));
    IfDqblk {
        dqb_bhardlimit: blocks,
        dqb_ihardlimit: inodes,
        dqb_valid: QIF_LIMITS,
        ..IfDqblk::default()
    }
}

/// The `Q_XSETQLIM` argument for quota `id` of type `qtype`; `None` clears the limits.
pub(crate) fn xfs_limits(qtype: u32, id: u32, limits: Option<&Limits>) -> FsDiskQuota {
    let (blocks, inodes) = limits.map_or((0, 0), |l| (bytes_to_basic_blocks(l.bytes), l.inodes));
    FsDiskQuota {
        d_version: FS_DQUOT_VERSION,
        d_flags: if qtype == PRJQUOTA {
            FS_PROJ_QUOTA
        } else {
            FS_USER_QUOTA
        },
        d_fieldmask: FS_DQ_BHARD | FS_DQ_BSOFT | FS_DQ_IHARD | FS_DQ_ISOFT,
        d_id: id,
        d_blk_hardlimit: blocks,
        d_ino_hardlimit: inodes,
        ..FsDiskQuota::default()
    }
}

pub(crate) fn usage_of_dqblk(q: &IfDqblk) -> Usage {
    Usage {
        bytes_used: q.dqb_curspace,
        bytes_limit: q.dqb_bhardlimit.saturating_mul(QIF_DQBLKSIZE),
        inodes_used: q.dqb_curinodes,
        inodes_limit: q.dqb_ihardlimit,
    }
}

pub(crate) fn usage_of_xfs(q: &FsDiskQuota) -> Usage {
    Usage {
        bytes_used: q.d_bcount.saturating_mul(BBSIZE),
        bytes_limit: q.d_blk_hardlimit.saturating_mul(BBSIZE),
        inodes_used: q.d_icount,
        inodes_limit: q.d_ino_hardlimit,
    }
}

/// A quota id is in use when anything is charged to it or it carries limits.
pub(crate) fn in_use(u: &Usage) -> bool {
    u.bytes_used != 0 || u.inodes_used != 0 || u.bytes_limit != 0 || u.inodes_limit != 0
}

/// Where quotactl commands go: an open fd on the filesystem (quotactl_fd), and its block
/// device for kernels before 5.14.
#[derive(Debug)]
pub(crate) struct Target {
    pub mount_point: PathBuf,
    fd: File,
    device: Option<CString>,
}

impl Target {
    pub fn open(mount_point: &Path, device: &str) -> Result<Self> {
        let fd = File::open(mount_point).map_err(|e| Error::io("open", mount_point, e))?;
        Ok(Target {
            mount_point: mount_point.to_path_buf(),
            fd,
            device: CString::new(Path::new(device).as_os_str().as_bytes()).ok(),
        })
    }

    /// quotactl(cmd, id, addr) on this filesystem.
    ///
    /// # Safety
    ///
    /// `addr` must point to the structure `cmd` reads or writes (or be null where it takes none).
    unsafe fn call(&self, cmd: i32, id: u32, addr: *mut libc::c_char) -> Result<(), Errno> {
        // SAFETY: quotactl_fd(fd, cmd, id, addr): fd is open; the caller vouches for addr.
        let r = unsafe {
            libc::syscall(
                libc::SYS_quotactl_fd,
                self.fd.as_raw_fd(),
                cmd as libc::c_uint,
                id,
                addr,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = Errno::last();
        if e != Errno::ENOSYS {
            return Err(e);
        }
        let Some(device) = &self.device else {
            return Err(e);
        };
        // SAFETY: device is a NUL-terminated path; the caller vouches for addr.
        if unsafe { libc::quotactl(cmd, device.as_ptr(), id as libc::c_int, addr) } == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }

    fn error(&self, op: &'static str, id: u32, e: Errno) -> Error {
        Error::Quota {
            op,
            path: self.mount_point.clone(),
            id,
            reason: QuotaFailure::from_errno(e),
        }
    }

    /// Q_XGETQSTATV: the `FS_QUOTA_*` flags (works on ext4 and XFS).
    pub fn state(&self) -> Result<u16, Errno> {
        let mut st = FsQuotaStatv {
            qs_version: FS_QSTATV_VERSION1,
            ..FsQuotaStatv::default()
        };
        // SAFETY: Q_XGETQSTATV fills a fs_quota_statv whose version we set.
        unsafe { self.call(qcmd(Q_XGETQSTATV, PRJQUOTA), 0, ptr(&mut st))? };
        Ok(st.qs_flags)
    }

    /// Q_SETQUOTA (generic) or Q_XSETQLIM (XFS) of `limits` on quota `id` of `qtype`.
    pub fn set_limits(
        &self,
        xfs: bool,
        qtype: u32,
        id: u32,
        limits: Option<&Limits>,
    ) -> Result<()> {
        if xfs {
            let mut q = xfs_limits(qtype, id, limits);
            // SAFETY: Q_XSETQLIM reads a fs_disk_quota.
            unsafe { self.call(qcmd(Q_XSETQLIM, qtype), id, ptr(&mut q)) }
                .map_err(|e| self.error("Q_XSETQLIM", id, e))
        } else {
            let mut q = dqblk_limits(limits);
            // SAFETY: Q_SETQUOTA reads an if_dqblk.
            unsafe { self.call(qcmd(Q_SETQUOTA, qtype), id, ptr(&mut q)) }
                .map_err(|e| self.error("Q_SETQUOTA", id, e))
        }
    }

    /// Q_GETQUOTA (generic) or Q_XGETQUOTA (XFS) of quota `id` of `qtype`.
    pub fn usage(&self, xfs: bool, qtype: u32, id: u32) -> Result<Usage> {
        if xfs {
            let mut q = FsDiskQuota::default();
            // SAFETY: Q_XGETQUOTA fills a fs_disk_quota.
            match unsafe { self.call(qcmd(Q_XGETQUOTA, qtype), id, ptr(&mut q)) } {
                Ok(()) => Ok(usage_of_xfs(&q)),
                // XFS has no record for an id never used.
                Err(Errno::ENOENT) => Ok(usage_of_xfs(&FsDiskQuota::default())),
                Err(e) => Err(self.error("Q_XGETQUOTA", id, e)),
            }
        } else {
            let mut q = IfDqblk::default();
            // SAFETY: Q_GETQUOTA fills an if_dqblk.
            unsafe { self.call(qcmd(Q_GETQUOTA, qtype), id, ptr(&mut q)) }
                .map_err(|e| self.error("Q_GETQUOTA", id, e))?;
            Ok(usage_of_dqblk(&q))
        }
    }
}

fn ptr<T>(t: &mut T) -> *mut libc::c_char {
    (t as *mut T).cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn command_encoding() {
        // Values of QCMD(...) as C computes them.
        assert_eq!(qcmd(Q_GETQUOTA, PRJQUOTA), 0x8000_0702_u32 as i32);
        assert_eq!(qcmd(Q_SETQUOTA, USRQUOTA), 0x8000_0800_u32 as i32);
        assert_eq!(Q_XGETQUOTA, 0x5803);
        assert_eq!(Q_XSETQLIM, 0x5804);
        assert_eq!(Q_XGETQSTATV, 0x5808);
        assert_eq!(qcmd(Q_XSETQLIM, PRJQUOTA), 0x0058_0402);
    }

    #[test]
    fn struct_layouts_match_the_kernel() {
        assert_eq!(size_of::<IfDqblk>(), 72);
        assert_eq!(offset_of!(IfDqblk, dqb_valid), 64);
        assert_eq!(size_of::<FsDiskQuota>(), 112);
        assert_eq!(offset_of!(FsDiskQuota, d_id), 4);
        assert_eq!(offset_of!(FsDiskQuota, d_bcount), 40);
        assert_eq!(offset_of!(FsDiskQuota, d_rtb_hardlimit), 72);
        assert_eq!(size_of::<FsQuotaStatv>(), 160);
        assert_eq!(offset_of!(FsQuotaStatv, qs_flags), 2);
        assert_eq!(offset_of!(FsQuotaStatv, qs_pquota), 56);
    }

    #[test]
    fn limit_arithmetic_rounds_up() {
        assert_eq!(bytes_to_qif_blocks(1 << 20), 1024);
        assert_eq!(bytes_to_qif_blocks(1), 1);
        assert_eq!(bytes_to_qif_blocks(1025), 2);
        assert_eq!(bytes_to_basic_blocks(1 << 20), 2048);
        assert_eq!(bytes_to_basic_blocks(513), 2);
        assert_eq!(bytes_to_qif_blocks(u64::MAX), u64::MAX / 1024 + 1);
    }

    #[test]
    fn set_and_clear_arguments() {
        let l = Limits {
            bytes: 8 << 20,
            inodes: 200,
        };
        let q = dqblk_limits(Some(&l));
        assert_eq!((q.dqb_bhardlimit, q.dqb_ihardlimit), (8192, 200));
        assert_eq!((q.dqb_bsoftlimit, q.dqb_isoftlimit), (0, 0));
        assert_eq!(q.dqb_valid, QIF_LIMITS);
        let q = dqblk_limits(None);
        assert_eq!((q.dqb_bhardlimit, q.dqb_ihardlimit, q.dqb_valid), (0, 0, 5));

        let x = xfs_limits(PRJQUOTA, 2_097_152, Some(&l));
        assert_eq!(x.d_version, 1);
        assert_eq!(x.d_flags, FS_PROJ_QUOTA);
        assert_eq!(x.d_id, 2_097_152);
        assert_eq!(x.d_fieldmask, 0b1111);
        assert_eq!((x.d_blk_hardlimit, x.d_ino_hardlimit), (16384, 200));
        assert_eq!((x.d_blk_softlimit, x.d_ino_softlimit), (0, 0));
        assert_eq!(xfs_limits(USRQUOTA, 1000, None).d_flags, FS_USER_QUOTA);
        assert_eq!(xfs_limits(USRQUOTA, 1000, None).d_blk_hardlimit, 0);
    }

    #[test]
    fn usage_conversion() {
        let q = IfDqblk {
            dqb_bhardlimit: 8192,
            dqb_curspace: 4096 * 3,
            dqb_ihardlimit: 200,
            dqb_curinodes: 4,
            ..IfDqblk::default()
        };
        let u = usage_of_dqblk(&q);
        assert_eq!(
            u,
            Usage {
                bytes_used: 12288,
                bytes_limit: 8 << 20,
                inodes_used: 4,
                inodes_limit: 200
            }
        );
        assert!(in_use(&u));
        let x = FsDiskQuota {
            d_bcount: 24,
            d_blk_hardlimit: 16384,
            d_icount: 4,
            d_ino_hardlimit: 200,
            ..FsDiskQuota::default()
        };
        assert_eq!(usage_of_xfs(&x), u);
        assert!(!in_use(&usage_of_dqblk(&IfDqblk::default())));
    }
}
