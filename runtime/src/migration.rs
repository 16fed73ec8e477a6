//! Starting the kernel's cgroup-migration grace period early.
//!
//! Moving a task between cgroups write-locks the kernel's global `cgroup_threadgroup_rwsem`,
//! and the first such move after a quiet spell blocks in `rcu_sync_enter` for a whole RCU
//! grace period (3 to 20 ms on a 2-core node, depending on load); moves during the following
//! grace period are fast. The engine moves the sandbox's first process into its cgroups half
//! way through `create`, so `create` first forks a tiny process that moves itself into
//! paddock's own top cgroup and exits: the grace period then elapses while `create` reads the
//! bundle, leases the identity, writes its records and sets up the engine, instead of after.
//!
//! The process only ever enters paddock's top cgroup (never a host cgroup). On cgroup v2 it is
//! started only once that cgroup has controllers enabled for its children, so the kernel
//! refuses the move (`EBUSY`) after taking the lock: the grace period is started all the same,
//! and nothing moves. The child runs nothing but system calls between `fork` and `_exit`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

use crate::cgroups::Layout;
use crate::policy::CGROUP_ROOT;

/// paddock's top cgroup in the v1 hierarchy holding `pids` (or any v1 controller hierarchy),
/// else in the v2 tree; `None` without a cgroup hierarchy.
pub fn target(layout: &Layout) -> Option<PathBuf> {
    let hierarchy = layout
        .v1("pids")
        .or_else(|| {
            layout
                .hierarchies
                .iter()
                .find(|h| !h.unified && h.controllers.iter().any(|c| !c.starts_with("name=")))
        })
        .or_else(|| layout.v2())?;
    Some(hierarchy.mount_point.join(CGROUP_ROOT))
}

/// A v2 cgroup with controllers enabled for its children (so it takes no process itself).
fn has_children_controllers(dir: &std::path::Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.subtree_control")).is_ok_and(|s| !s.trim().is_empty())
}

/// `n` in decimal, into `buf`; returns the digits.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The `cgroup.procs` file the warm-up process writes its pid to: paddock's top cgroup (made
/// when missing, as the engine would for the first sandbox); `None` when there is none to use.
fn procs_file(layout: &Layout) -> Option<CString> {
    let top = target(layout)?;
    match std::fs::create_dir(&top) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            tracing::debug!("cgroup warm-up: mkdir {}: {e}", top.display());
            return None;
        }
    }
    let unified = layout.v2().is_some_and(|h| top.starts_with(&h.mount_point));
    if unified && !has_children_controllers(&top) {
        // On v2 the process would really enter the top cgroup, where it could race a
        // first sandbox enabling the controllers there; with them enabled the kernel
        // refuses it (after taking the lock), which is all that is wanted.
        return None;
    }
    CString::new(top.join("cgroup.procs").as_os_str().as_bytes()).ok()
}

/// The warm-up process's whole life: its pid into `path`, then `_exit`. Errors are ignored
/// (nothing to report them to).
fn move_self_and_exit(path: &CString) -> ! {
    let mut buf = [0u8; 10];
    // SAFETY: getpid cannot fail; open/write/_exit get a valid C string, a valid buffer and
    // its length.
    unsafe {
        let digits = decimal(libc::getpid().unsigned_abs(), &mut buf);
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, digits.as_ptr().cast(), digits.len());
        }
        libc::_exit(0)
    }
}

/// Forks the process that makes the move; the parent gets its pid. Must be called while the
/// caller is single-threaded.
fn fork_mover(path: &CString) -> Option<Pid> {
    // SAFETY: the child only makes system calls (getpid, open, write, _exit) on memory
    // prepared before the fork, so it needs nothing another thread could hold.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => Some(child),
        Ok(ForkResult::Child) => move_self_and_exit(path),
        Err(e) => {
            tracing::debug!("cgroup warm-up: fork: {e}");
            None
        }
    }
}

/// Starts the grace period from a long-lived caller that reaps its children elsewhere (the
/// shim, as it starts: its first `create` then finds the grace period over instead of waiting
/// for all of it). The caller finds the cgroup layout, so the child has only its move to make
/// and the grace period starts as soon as the child runs (0.1 ms after the fork, against
/// 0.5 ms for a child that found the layout itself). Returns the child's pid, for the caller's
/// reaper. Must be called while the caller is single-threaded.
pub fn spawn_detached() -> Option<Pid> {
    let layout = Layout::detect().ok()?;
    fork_mover(&procs_file(&layout)?)
}

/// A forked warm-up process; reaped by [`Warmup::finish`] or on drop.
#[derive(Debug, Default)]
pub struct Warmup(Option<Pid>);

impl Warmup {
    /// Forks the process when the host has somewhere to move it (see [`target`]; made when
    /// missing, as the engine would for the first sandbox). Must be called while the caller is
    /// single-threaded.
    pub fn start(layout: &Layout) -> Self {
        Self(procs_file(layout).as_ref().and_then(fork_mover))
    }

    /// Reaps the process (it exits right after its move).
    pub fn finish(mut self) {
        self.reap();
    }

    fn reap(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = waitpid(pid, None);
        }
    }
}

impl Drop for Warmup {
    fn drop(&mut self) {
        self.reap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:5 - cgroup2 cgroup2 rw
35 25 0:31 / /sys/fs/cgroup/cpu rw,nosuid shared:10 - cgroup cgroup rw,cpu
40 25 0:36 / /sys/fs/cgroup/pids rw,nosuid shared:15 - cgroup cgroup rw,pids
";
    const NO_PIDS: &str = "\
29 25 0:25 / /sys/fs/cgroup/systemd rw shared:4 - cgroup cgroup rw,xattr,name=systemd
35 25 0:31 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
";
    const UNIFIED: &str = "30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:5 - cgroup2 cgroup2 rw\n";

    #[test]
    fn picks_the_pids_hierarchy_of_a_hybrid_host() {
        let l = Layout::from_mountinfo(HYBRID);
        assert_eq!(
            target(&l),
            Some(PathBuf::from("/sys/fs/cgroup/pids/paddock"))
        );
    }

    #[test]
    fn falls_back_to_a_controller_hierarchy_never_a_named_one() {
        let l = Layout::from_mountinfo(NO_PIDS);
        assert_eq!(
            target(&l),
            Some(PathBuf::from("/sys/fs/cgroup/memory/paddock"))
        );
    }

    #[test]
    fn the_v2_tree_on_a_unified_host() {
        assert_eq!(
            target(&Layout::from_mountinfo(UNIFIED)),
            Some(PathBuf::from("/sys/fs/cgroup/paddock"))
        );
    }

    #[test]
    fn nothing_without_a_cgroup_hierarchy() {
        assert_eq!(target(&Layout::from_mountinfo("")), None);
    }

    #[test]
    fn decimal_digits() {
        let mut b = [0u8; 10];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(4_194_304, &mut b), b"4194304");
        assert_eq!(decimal(u32::MAX, &mut b), b"4294967295");
    }
}
