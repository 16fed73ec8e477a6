//! Loop devices through the kernel's ioctls: take a free one from `/dev/loop-control`, bind an
//! image with `LOOP_CONFIGURE` (or `LOOP_SET_FD` + `LOOP_SET_STATUS64` on kernels before 5.8)
//! and `LO_FLAGS_AUTOCLEAR`, find devices by backing file through sysfs, detach them.
//!
//! With autoclear the device frees itself on its last close: once the filesystem on it is
//! unmounted, or, if the process dies between attach and mount, when its fd is closed.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::error::{Error, Result};

const LOOP_CONTROL: &str = "/dev/loop-control";
const SYS_BLOCK: &str = "/sys/block";
const LOOP_MAJOR: u32 = 7;

// <linux/loop.h>
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
pub(crate) const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

/// Attempts at grabbing a free device when other processes race for the same one.
const ATTACH_ATTEMPTS: usize = 64;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct LoopInfo64 {
    pub lo_device: u64,
    pub lo_inode: u64,
    pub lo_rdevice: u64,
    pub lo_offset: u64,
    pub lo_sizelimit: u64,
    pub lo_number: u32,
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    pub lo_file_name: [u8; LO_NAME_SIZE],
    pub lo_crypt_name: [u8; LO_NAME_SIZE],
    pub lo_encrypt_key: [u8; LO_KEY_SIZE],
    pub lo_init: [u64; 2],
}

/// `struct loop_config`, the argument of `LOOP_CONFIGURE`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct LoopConfig {
    pub fd: u32,
    pub block_size: u32,
    pub info: LoopInfo64,
    pub reserved: [u64; 8],
}

impl LoopInfo64 {
    fn zeroed() -> Self {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        }
    }
}

/// The status to bind `image` with: autoclear, and the image's name (informational, truncated
/// to 63 bytes; sysfs `loop/backing_file` has the full path).
pub(crate) fn loop_info(image: &Path, flags: u32) -> LoopInfo64 {
    let mut info = LoopInfo64::zeroed();
    info.lo_flags = flags;
    let name = image.as_os_str().as_bytes();
    let n = name.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..n].copy_from_slice(&name[..n]);
    info
}

/// The `LOOP_CONFIGURE` argument binding `fd` (the open image) with `info`.
pub(crate) fn loop_config(fd: RawFd, info: LoopInfo64) -> LoopConfig {
    LoopConfig {
        fd: fd as u32,
        block_size: 0,
        info,
        reserved: [0; 8],
    }
}

/// A loop device bound to an image, held open until the filesystem on it is mounted. Dropping
/// it closes the fd; with autoclear an unmounted device then unbinds itself.
#[derive(Debug)]
pub(crate) struct Attached {
    pub device: PathBuf,
    _fd: File,
}

/// Binds `image` (opened read-write as `file`) to a free loop device with autoclear.
pub(crate) fn attach(image: &Path, file: &File) -> Result<Attached> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(LOOP_CONTROL)
        .map_err(|e| Error::io("open", LOOP_CONTROL, e))?;
    let info = loop_info(image, LO_FLAGS_AUTOCLEAR);
    for _ in 0..ATTACH_ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(Error::io(
                "LOOP_CTL_GET_FREE",
                LOOP_CONTROL,
                io::Error::last_os_error(),
            ));
        }
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let dev = open_device(&device, n as u32)?;
        match bind(&dev, file, info) {
            Ok(()) => return Ok(Attached { device, _fd: dev }),
            // Another process bound it between GET_FREE and our bind: take the next one.
            Err(Errno::EBUSY) => {
                tracing::debug!(device = %device.display(), "loop device taken, retrying");
                continue;
            }
            Err(e) => return Err(Error::errno("bind loop device", device, e)),
        }
    }
    Err(Error::io(
        "bind loop device",
        image,
        io::Error::other(format!(
            "every free loop device was taken by someone else {ATTACH_ATTEMPTS} times"
        )),
    ))
}

fn open_device(device: &Path, n: u32) -> Result<File> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(device)
    };
    match open() {
        // /dev without devtmpfs (a container): make the node ourselves.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            nix::sys::stat::mknod(
                device,
                nix::sys::stat::SFlag::S_IFBLK,
                nix::sys::stat::Mode::from_bits_truncate(0o660),
                nix::sys::stat::makedev(LOOP_MAJOR.into(), n.into()),
            )
            .or_else(|e| if e == Errno::EEXIST { Ok(()) } else { Err(e) })
            .map_err(|e| Error::errno("mknod", device, e))?;
            open().map_err(|e| Error::io("open", device, e))
        }
        r => r.map_err(|e| Error::io("open", device, e)),
    }
}

fn bind(dev: &File, file: &File, info: LoopInfo64) -> std::result::Result<(), Errno> {
    let config = loop_config(file.as_raw_fd(), info);
    // SAFETY: `config` is a valid loop_config whose fd is the open image; the kernel only reads it.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config) };
    if r == 0 {
        return Ok(());
    }
    match Errno::last() {
        // Before 5.8 there is no LOOP_CONFIGURE: bind, then set the status.
        Errno::EINVAL | Errno::ENOTTY => {}
        e => return Err(e),
    }
    // SAFETY: LOOP_SET_FD takes the image's fd by value.
    if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, file.as_raw_fd()) } != 0 {
        return Err(Errno::last());
    }
    // SAFETY: `info` is a valid loop_info64 the kernel only reads.
    if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64, &info) } != 0 {
        let e = Errno::last();
        // SAFETY: LOOP_CLR_FD takes no argument; undoes our LOOP_SET_FD.
        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
        return Err(e);
    }
    Ok(())
}

/// A bound loop device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub device: PathBuf,
    /// The backing file, without the kernel's ` (deleted)` suffix.
    pub backing_file: PathBuf,
    /// True when the backing file was unlinked while bound.
    pub deleted: bool,
}

/// Every bound loop device whose backing file is `dir` or below it.
pub fn backed_under(dir: &Path) -> Result<Vec<LoopDevice>> {
    Ok(bound()?
        .into_iter()
        .filter(|d| d.backing_file.starts_with(dir))
        .collect())
}

/// Every bound loop device, from `/sys/block/loop*/loop/backing_file`.
pub fn bound() -> Result<Vec<LoopDevice>> {
    let entries = fs::read_dir(SYS_BLOCK).map_err(|e| Error::io("read", SYS_BLOCK, e))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("loop") {
            continue;
        }
        let Some(backing) = backing_file(name) else {
            continue;
        };
        let (backing_file, deleted) = match backing.strip_suffix(" (deleted)") {
            Some(p) => (PathBuf::from(p), true),
            None => (PathBuf::from(backing), false),
        };
        out.push(LoopDevice {
            device: PathBuf::from("/dev").join(name),
            backing_file,
            deleted,
        });
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(out)
}

/// The backing file of `/dev/<name>`, None when it is not bound.
fn backing_file(name: &str) -> Option<String> {
    let p = Path::new(SYS_BLOCK).join(name).join("loop/backing_file");
    let s = fs::read_to_string(p).ok()?;
    Some(s.trim_end_matches('\n').to_string())
}

/// The loop devices bound to exactly this image: same path in sysfs and, while the image
/// exists, the same inode as LOOP_GET_STATUS64 reports (a path alone could be a newer file).
pub(crate) fn bound_to(image: &Path) -> Result<Vec<LoopDevice>> {
    let ours = fs::metadata(image).ok().map(|m| (m.dev(), m.ino()));
    let mut out = Vec::new();
    for d in bound()? {
        if d.backing_file != image {
            continue;
        }
        match (ours, status(&d.device)) {
            (Some((dev, ino)), Ok(Some(info))) if !d.deleted => {
                if info.lo_device == dev && info.lo_inode == ino {
                    out.push(d);
                }
            }
            // Unbound since we listed it.
            (_, Ok(None)) => {}
            // Our image is gone, or the device cannot be asked: the path is all there is.
            _ => out.push(d),
        }
    }
    Ok(out)
}

/// LOOP_GET_STATUS64 of a device, None when it is not bound (ENXIO).
fn status(device: &Path) -> Result<Option<LoopInfo64>> {
    let dev = File::open(device).map_err(|e| Error::io("open", device, e))?;
    let mut info = LoopInfo64::zeroed();
    // SAFETY: `info` is a writable loop_info64 the kernel fills.
    if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_GET_STATUS64, &mut info) } != 0 {
        return match Errno::last() {
            Errno::ENXIO => Ok(None),
            e => Err(Error::errno("LOOP_GET_STATUS64", device, e)),
        };
    }
    Ok(Some(info))
}

/// Unbinds `device` (only call it for a device [`bound_to`] returned) and waits up to
/// `timeout` for it to be free. A device still open elsewhere (a mount in another namespace)
/// gets autoclear from the kernel instead and is reported busy.
pub(crate) fn detach(device: &LoopDevice, timeout: Duration) -> Result<()> {
    let name = device
        .device
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    match File::open(&device.device) {
        Ok(dev) => {
            // SAFETY: LOOP_CLR_FD takes no argument.
            if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) } != 0 {
                match Errno::last() {
                    Errno::ENXIO => return Ok(()),
                    // Older kernels refuse a busy device; wait for it like newer ones.
                    Errno::EBUSY => {}
                    e => return Err(Error::errno("LOOP_CLR_FD", &device.device, e)),
                }
            }
        }
        // Gone, or already running down.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENXIO) => {}
        Err(e) => return Err(Error::io("open", &device.device, e)),
    }
    wait_unbound(&name, &device.backing_file, timeout).map_err(|_| Error::LoopBusy {
        device: device.device.clone(),
        image: device.backing_file.clone(),
        reason: format!(
            "still bound {}ms after LOOP_CLR_FD: something (a mount in another namespace, an \
             open fd) still uses it; it frees itself when released",
            timeout.as_millis()
        ),
    })
}

/// Polls sysfs until `/dev/<name>` no longer has `backing` (the kernel may finish an autoclear
/// a moment after the unmount returns).
pub(crate) fn wait_unbound(
    name: &str,
    backing: &Path,
    timeout: Duration,
) -> std::result::Result<(), ()> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        match backing_file(name) {
            None => return Ok(()),
            Some(b) if Path::new(b.trim_end_matches(" (deleted)")) != backing => return Ok(()),
            Some(_) => {}
        }
        if start.elapsed() >= timeout {
            return Err(());
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_the_kernel() {
        // sizeof in <linux/loop.h> on every architecture: 232 and 304 bytes.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
        assert_eq!(std::mem::offset_of!(LoopInfo64, lo_flags), 52);
        assert_eq!(std::mem::offset_of!(LoopInfo64, lo_file_name), 56);
        assert_eq!(std::mem::offset_of!(LoopConfig, info), 8);
    }

    #[test]
    fn config_carries_fd_flags_and_name() {
        let info = loop_info(
            Path::new("/var/lib/paddock/images/web-0.img"),
            LO_FLAGS_AUTOCLEAR,
        );
        let c = loop_config(7, info);
        assert_eq!(c.fd, 7);
        assert_eq!(c.block_size, 0);
        assert_eq!(c.info.lo_flags, LO_FLAGS_AUTOCLEAR);
        assert_eq!(
            &c.info.lo_file_name[..33],
            b"/var/lib/paddock/images/web-0.img"
        );
        assert_eq!(c.info.lo_file_name[33], 0);
        assert_eq!(c.info.lo_offset, 0);
        assert_eq!(c.info.lo_sizelimit, 0);
    }

    #[test]
    fn long_names_are_truncated_and_terminated() {
        let long = format!("/{}", "x".repeat(200));
        let info = loop_info(Path::new(&long), 0);
        assert_eq!(info.lo_file_name[62], b'x');
        assert_eq!(info.lo_file_name[63], 0);
    }
}
