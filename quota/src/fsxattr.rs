//! Project ids on inodes: FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR with `fsx_projid` and
//! `FS_XFLAG_PROJINHERIT`, so that everything created below a directory inherits its project.

use std::fs::File;
use std::os::fd::AsRawFd;

use nix::errno::Errno;

/// `struct fsxattr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FsXattr {
    pub fsx_xflags: u32,
    pub fsx_extsize: u32,
    pub fsx_nextents: u32,
    pub fsx_projid: u32,
    pub fsx_cowextsize: u32,
    pub fsx_pad: [u8; 8],
}

pub(crate) const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;

const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `_IOC(dir, type, nr, size)` of asm-generic/ioctl.h.
pub(crate) const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    ((dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64) as libc::c_ulong
}

pub(crate) const FS_IOC_FSGETXATTR: libc::c_ulong =
    ioc(IOC_READ, b'X', 31, std::mem::size_of::<FsXattr>());
pub(crate) const FS_IOC_FSSETXATTR: libc::c_ulong =
    ioc(IOC_WRITE, b'X', 32, std::mem::size_of::<FsXattr>());

/// The attributes with project `id` set and inherited by children (`id` 0 clears both).
pub(crate) fn with_project(mut x: FsXattr, id: u32) -> FsXattr {
    x.fsx_projid = id;
    if id == 0 {
        x.fsx_xflags &= !FS_XFLAG_PROJINHERIT;
    } else {
        x.fsx_xflags |= FS_XFLAG_PROJINHERIT;
    }
    x
}

pub(crate) fn get(file: &File) -> Result<FsXattr, Errno> {
    let mut x = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR fills a struct fsxattr.
    if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x) } != 0 {
        return Err(Errno::last());
    }
    Ok(x)
}

pub(crate) fn set(file: &File, x: &FsXattr) -> Result<(), Errno> {
    // SAFETY: FS_IOC_FSSETXATTR reads a struct fsxattr.
    if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FSSETXATTR, x) } != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(FS_IOC_FSGETXATTR, 0x801C_581F);
        assert_eq!(FS_IOC_FSSETXATTR, 0x401C_5820);
    }

    #[test]
    fn project_bits() {
        let x = FsXattr {
            fsx_xflags: 0x8, // FS_XFLAG_APPEND stays
            ..FsXattr::default()
        };
        let p = with_project(x, 2_097_152);
        assert_eq!(p.fsx_projid, 2_097_152);
        assert_eq!(p.fsx_xflags, 0x8 | FS_XFLAG_PROJINHERIT);
        let c = with_project(p, 0);
        assert_eq!(c.fsx_projid, 0);
        assert_eq!(c.fsx_xflags, 0x8);
    }
}
