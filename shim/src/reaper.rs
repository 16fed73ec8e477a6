//! Exits of everything the shim is the parent of: `paddock` calls, and — the shim being a child
//! subreaper — the container inits and exec'd processes that re-parent to it when `paddock`
//! exits, as they do to containerd's runc shim.
//!
//! One thread reads SIGCHLD from a signalfd and reaps with `waitpid(-1)`. Since it reaps
//! everything, nobody else may wait for a child: a caller that spawns one subscribes to
//! containerd-shim's exit monitor first ([`Exits::subscribe`]) and reads its child's status
//! from there.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use containerd_shim::monitor::{
    monitor_notify_by_pid, monitor_subscribe, Subject, Subscription, Topic,
};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

/// The signals the shim handles itself; blocked in every thread, read from a signalfd.
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPIPE,
    ] {
        set.add(s);
    }
    set
}

/// Makes the process a child subreaper and blocks the handled signals. Call from `main`
/// before any thread exists, so that every thread inherits the mask. Children started through
/// `std::process::Command` do not inherit it: the standard library empties the signal mask of
/// every child it spawns (the spawn tests check the container's mask), which also lets it use
/// `posix_spawn` (a vfork, not a copy of the threaded shim) as long as no `pre_exec` is set.
pub fn prepare() -> nix::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(Errno::last());
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None)
}

/// The exit code containerd expects: the code, or 128 + the signal.
pub fn exit_code(status: WaitStatus) -> Option<(i32, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as i32)),
        _ => None,
    }
}

/// Children the shim started for itself (`paddock` calls, logging binaries, the cgroup
/// warm-up). Their exits go to the exit monitor's subscribers but not to `on_exit`, which keeps
/// the exit of a pid it does not know yet (an init that exits before its pid is read) for a
/// while: a helper's exit kept there would be taken for a later init's once the pid is reused.
static OWN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Held across spawning a helper child and recording its pid; the reaper waits for it before
/// deciding whose an exit is, so even a child that exits at once is known as the shim's own.
pub struct Claim(MutexGuard<'static, Vec<i32>>);

impl Claim {
    pub fn take() -> Self {
        Self(OWN.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// `pid` is the shim's own helper.
    pub fn own(mut self, pid: i32) {
        self.0.push(pid);
    }
}

/// Whether `pid` was a helper of the shim's own (and forgets it: its exit is being reaped).
fn disown(pid: i32) -> bool {
    let mut own = OWN.lock().unwrap_or_else(PoisonError::into_inner);
    match own.iter().position(|p| *p == pid) {
        Some(i) => {
            own.swap_remove(i);
            true
        }
        None => false,
    }
}

/// Starts the reaper thread; `on_exit(pid, code)` runs in it for every reaped child but the
/// shim's own helpers ([`Claim`]), after the exit monitor's subscribers were told.
pub fn start(on_exit: impl Fn(i32, i32) + Send + 'static) -> nix::Result<()> {
    let sfd = SignalFd::with_flags(&handled(), SfdFlags::SFD_CLOEXEC)?;
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || loop {
            match sfd.read_signal() {
                Ok(Some(info)) if info.ssi_signo == Signal::SIGCHLD as u32 => reap(&on_exit),
                Ok(Some(info)) => log::debug!("signal {} ignored", info.ssi_signo),
                Ok(None) | Err(Errno::EINTR) => {}
                Err(e) => {
                    log::error!("reaper: read signalfd: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .map(|_| ())
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)))
}

fn reap(on_exit: &impl Fn(i32, i32)) {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(status) => {
                if let Some((pid, code)) = exit_code(status) {
                    if let Err(e) = monitor_notify_by_pid(pid, code) {
                        log::warn!("exit monitor: {e}");
                    }
                    if !disown(pid) {
                        on_exit(pid, code);
                    }
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                log::warn!("waitpid: {e}");
                return;
            }
        }
    }
}

/// A subscription to child exits, taken before spawning the child whose status is wanted.
pub struct Exits(Subscription);

impl Exits {
    pub fn subscribe() -> Result<Self, String> {
        monitor_subscribe(Topic::Pid)
            .map(Self)
            .map_err(|e| format!("subscribe to exits: {e}"))
    }

    /// Waits for `pid`'s exit code.
    pub fn wait(&self, pid: i32) -> Result<i32, String> {
        loop {
            match self.0.rx.recv() {
                Ok(ev) => {
                    if matches!(ev.subject, Subject::Pid(p) if p == pid) {
                        return Ok(ev.exit_code);
                    }
                }
                Err(_) => return Err(format!("exit monitor closed while waiting for {pid}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Pid;

    #[test]
    fn own_helpers_are_known_once() {
        Claim::take().own(-7);
        assert!(disown(-7));
        assert!(
            !disown(-7),
            "an exit is reaped once: the pid may be reused after it"
        );
        assert!(!disown(-8));
    }

    #[test]
    fn codes() {
        let p = Pid::from_raw(7);
        assert_eq!(exit_code(WaitStatus::Exited(p, 3)), Some((7, 3)));
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            Some((7, 137))
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }
}
