//! User and group lookups of the processes paddock makes: `/etc/passwd` and `/etc/group` only.
//!
//! The engine looks one user up itself: when a spec sets no `HOME`, the sandbox's init reads
//! the process user's home directory, inside the sandbox's root, just before it executes the
//! workload. glibc answers through the services of the `nsswitch.conf` it read first (the
//! host's, when the process looked anything up before entering the sandbox, else the
//! sandbox's) and loads each module (`libnss_systemd.so.2`, `libnss_sss.so.2`, …) with
//! `dlopen` from where the process is then: the sandbox's image. Code of the image, built for
//! whatever libc the image has, would run inside paddock's init before the workload starts (in
//! a statically linked paddock, beside a second libc). runc reads `/etc/passwd` itself; this
//! makes glibc do the same. The setting is the process's and is inherited by every process it
//! forks.

use std::ffi::CStr;

use crate::error::{Error, Result};

/// The databases a sandbox's init may consult, each with the one service it may use.
const FILES_ONLY: [(&CStr, &CStr); 2] = [(c"passwd", c"files"), (c"group", c"files")];

extern "C" {
    /// glibc's override of `/etc/nsswitch.conf` for one database of this process (`nss.h`);
    /// it also stops glibc from reading the file again later, wherever the process then is.
    fn __nss_configure_lookup(
        dbname: *const libc::c_char,
        service_line: *const libc::c_char,
    ) -> libc::c_int;
}

/// Restricts this process, and the processes it forks from now on, to `files` for users and
/// groups. Called before the engine forks a sandbox's first process.
pub fn files_only() -> Result<()> {
    for (db, service) in FILES_ONLY {
        // SAFETY: both arguments are NUL-terminated strings that outlive the call; glibc copies
        // what it keeps. The caller is single-threaded when it makes sandbox processes.
        let rc = unsafe { __nss_configure_lookup(db.as_ptr(), service.as_ptr()) };
        if rc != 0 {
            return Err(Error::sys(
                "restrict user lookups to /etc/passwd and /etc/group",
                nix::Error::last(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_databases_are_accepted() {
        assert!(files_only().is_ok());
    }
}
