//! Foreground `run` and `exec`: paddock stays the parent (as a child subreaper), forwards the
//! signals a terminal or supervisor sends, and exits with the workload's status.

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Orphans of the sandbox (its init, once the intermediate process exits) reparent to us.
pub fn become_subreaper() -> Result<(), String> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers and affects only this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(format!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Signals blocked for synchronous handling. Installed only after the sandbox process exists,
/// so it does not inherit the mask.
pub struct Forwarder {
    set: SigSet,
}

impl Forwarder {
    pub fn install() -> Result<Self, String> {
        let mut set = SigSet::empty();
        for s in FORWARDED {
            set.add(s);
        }
        set.add(Signal::SIGCHLD);
        set.thread_block()
            .map_err(|e| format!("block signals: {e}"))?;
        Ok(Self { set })
    }

    /// Waits for `pid` to exit, reaping every other orphan meanwhile; returns the exit code in
    /// shell convention (128 + signal for a killed process).
    pub fn wait_for(&self, pid: i32) -> Result<u8, String> {
        let target = Pid::from_raw(pid);
        loop {
            if let Some(code) = reap(target)? {
                return Ok(code);
            }
            match self.set.wait() {
                Ok(Signal::SIGCHLD) => {}
                Ok(sig) => {
                    let _ = kill(target, sig);
                }
                Err(e) => return Err(format!("sigwait: {e}")),
            }
        }
    }
}

fn reap(target: Pid) -> Result<Option<u8>, String> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == target => return Ok(Some(code as u8)),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == target => {
                return Ok(Some(128u8.wrapping_add(sig as u8)))
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue,
            Err(Errno::ECHILD) => {
                return Err(format!("process {target} is not a child of paddock"))
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
}
