//! A new network namespace starts with its loopback down; runc brings it up, and so does
//! paddock, so that an app can talk to itself on 127.0.0.1.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};

/// Sets `lo` up in the network namespace of `pid`: the calling thread enters it and returns to
/// its own namespace before this returns, whatever happened in between.
pub fn loopback_up(pid: i32) -> Result<()> {
    let path = format!("/proc/{pid}/ns/net");
    let target = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
    let own = File::open("/proc/thread-self/ns/net")
        .map_err(|e| Error::io("open", "/proc/thread-self/ns/net", e))?;
    setns(&target, CloneFlags::CLONE_NEWNET).map_err(|e| Error::sys("setns(sandbox net)", e))?;
    let result = set_up("lo");
    setns(&own, CloneFlags::CLONE_NEWNET).map_err(|e| Error::sys("setns(own net)", e))?;
    result
}

fn set_up(name: &str) -> Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io("socket", "lo", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags into `req`, a valid ifreq that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(Error::io(
            "SIOCGIFFLAGS",
            name,
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: ifru_flags is the member SIOCGIFFLAGS just filled in.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads `req`, a valid ifreq that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(Error::io(
            "SIOCSIFFLAGS",
            name,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
