//! statfs(2), with the fields as u64 whatever the platform's struct says.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) const EXT4_SUPER_MAGIC: u64 = 0xEF53;
pub(crate) const XFS_SUPER_MAGIC: u64 = 0x5846_5342;

/// What statfs says about a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FsStat {
    pub fs_type: u64,
    pub block_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
    pub files: u64,
    pub files_free: u64,
}

impl FsStat {
    pub fn bytes_available(&self) -> u64 {
        self.blocks_available.saturating_mul(self.block_size)
    }
}

pub(crate) fn statfs(path: &Path) -> io::Result<FsStat> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: all-zero bytes are a valid `struct statfs` (plain integers).
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `buf` a writable statfs the kernel fills.
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_frsize is the unit of f_blocks; fall back to f_bsize where it is 0.
    let frsize = if buf.f_frsize > 0 {
        buf.f_frsize as u64
    } else {
        buf.f_bsize as u64
    };
    Ok(FsStat {
        fs_type: buf.f_type as u64,
        block_size: frsize,
        blocks: buf.f_blocks,
        blocks_free: buf.f_bfree,
        blocks_available: buf.f_bavail,
        files: buf.f_files,
        files_free: buf.f_ffree,
    })
}
