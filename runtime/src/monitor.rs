//! The sandbox monitor: a small process paddock leaves behind at `create`, outside the
//! sandbox's cgroup, that lives until the sandbox's cgroup is removed. It
//! - records how the init ended (`exit.json`), through the process-events connector, since
//!   the init's reaper is whoever drives paddock (containerd's shim, a subreaper) and not us;
//! - watches for OOM kills and, under policy `kill`, tears the whole sandbox down (on cgroup v1
//!   nothing else would; on v2 `memory.oom.group` does it in the kernel and this is a backstop);
//! - appends every OOM event to `oom.log`.
//!
//! No daemon: one monitor per sandbox, forked from `paddock create`, stopped by `delete`.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{fork, setsid, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::cgroups::SandboxCgroup;
use crate::error::{Error, Result};
use crate::oom::{self, Wake};
use crate::policy::OomPolicy;
use crate::proc_events::ProcEvents;
use crate::teardown;

const EXIT_FILE: &str = "exit.json";
const OOM_LOG: &str = "oom.log";
/// How long the backstop leaves the kernel's `memory.oom.group` kill to empty the sandbox.
const GROUP_KILL_GRACE: Duration = Duration::from_millis(500);
const PID_FILE: &str = "monitor.pid";

/// How the init ended, as its reaper saw it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    /// Raw wait status (`code << 8`, or the signal number).
    pub status: i32,
}

impl ExitRecord {
    pub fn signal(&self) -> Option<i32> {
        let sig = self.status & 0x7f;
        (sig != 0).then_some(sig)
    }
    pub fn code(&self) -> i32 {
        (self.status >> 8) & 0xff
    }
}

/// What the monitor needs to know.
pub struct Watch<'a> {
    pub record_dir: &'a Path,
    pub cgroup: &'a SandboxCgroup,
    pub app_cgroup: Option<String>,
    pub init: i32,
    pub policy: OomPolicy,
}

/// Forks the monitor. The process-events subscription and the OOM watcher are set up here,
/// before the fork, so nothing that happens after `create` returns can be missed, and `create`
/// need not wait for the monitor to start. The caller must be single-threaded.
pub fn spawn(w: &Watch<'_>) -> Result<i32> {
    let threads = fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0);
    if threads != 1 {
        return Err(Error::Invalid(format!(
            "cannot fork the sandbox monitor from a process with {threads} threads"
        )));
    }
    let events = ProcEvents::subscribe_exit_of(w.init)?;
    let watcher = oom::Watcher::new(w.cgroup, w.app_cgroup.as_deref()).ok();
    // SAFETY: the process is single-threaded (checked above), so the child may run any code.
    match unsafe { fork() }.map_err(|e| Error::sys("fork monitor", e))? {
        ForkResult::Parent { child } => {
            let pid = child.as_raw();
            let line = format!("{pid} {}", start_time(pid).unwrap_or(0));
            write_atomic(&w.record_dir.join(PID_FILE), line.as_bytes())?;
            Ok(pid)
        }
        ForkResult::Child => {
            let _ = setsid();
            let mut keep = vec![events.fd()];
            if let Some(wt) = &watcher {
                keep.extend(wt.fds());
            }
            detach_stdio(&keep);
            let _ = nix::sys::prctl::set_name(c"paddock-monitor");
            let code = match run(w, events, watcher) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("sandbox monitor: {e}");
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

fn detach_stdio(keep: &[i32]) {
    if let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    // The monitor must not hold the caller's pipes or locks open.
    if let Ok(entries) = fs::read_dir("/proc/self/fd") {
        let fds: Vec<i32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
            .filter(|fd| *fd > 2 && !keep.contains(fd))
            .collect();
        for fd in fds {
            // SAFETY: closing descriptors inherited from the parent that this process does not
            // use (the ones it uses are in `keep`); the directory iterator's fd is closed.
            unsafe { libc::close(fd) };
        }
    }
}

fn run(w: &Watch<'_>, events: ProcEvents, watcher: Option<oom::Watcher>) -> Result<()> {
    let record_dir = w.record_dir.to_path_buf();
    // Without an OOM watcher, or when OOMs need no action, the monitor ends with the init.
    let stay = watcher.is_some();
    let init = w.init;
    let exit_dir = record_dir.clone();
    std::thread::spawn(move || loop {
        match events.next_exits() {
            Ok(exits) => {
                if let Some(e) = exits.iter().find(|e| e.pid == init) {
                    let rec = ExitRecord { status: e.status };
                    if let Ok(data) = serde_json::to_vec(&rec) {
                        let _ = write_atomic(&exit_dir.join(EXIT_FILE), &data);
                    }
                    if !stay {
                        std::process::exit(0);
                    }
                    return;
                }
            }
            Err(_) => return,
        }
    });
    let Some(mut watcher) = watcher else {
        loop {
            std::thread::park();
        }
    };
    loop {
        match watcher.wait(None)? {
            Wake::Oom(ev) => {
                if let Ok(mut line) = serde_json::to_vec(&ev) {
                    line.push(b'\n');
                    let _ = fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(record_dir.join(OOM_LOG))
                        .and_then(|mut f| f.write_all(&line));
                }
                if w.policy == OomPolicy::Kill {
                    // On v2 the kernel's group kill is under way and memory.events counts
                    // each of its victims: racing it would take victims from its count. The
                    // monitor acts only on what it leaves (an oom_score_adj -1000 process).
                    if w.cgroup.v2_dir().is_some() {
                        teardown::wait_until_empty(w.cgroup, GROUP_KILL_GRACE);
                    }
                    teardown::kill_everything(w.cgroup)?;
                }
            }
            Wake::Timeout => {}
            Wake::Gone => return Ok(()),
        }
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data).map_err(|e| Error::io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// How the init ended, if the monitor saw it.
pub fn exit_record(record_dir: &Path) -> Option<ExitRecord> {
    let data = fs::read(record_dir.join(EXIT_FILE)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// The monitor's pid, if it still runs (checked by pid and start time).
fn running(record_dir: &Path) -> Option<i32> {
    let text = fs::read_to_string(record_dir.join(PID_FILE)).ok()?;
    let mut parts = text.split_whitespace();
    let pid = parts.next()?.parse::<i32>().ok()?;
    let start = parts.next()?.parse::<u64>().ok()?;
    (pid > 0 && start_time(pid) == Some(start)).then_some(pid)
}

/// How a stopped sandbox's init ended. The monitor writes it a moment after the kernel reports
/// the exit, so a reader that saw the init stop waits for it while the monitor still runs.
pub fn wait_exit_record(record_dir: &Path, patience: std::time::Duration) -> Option<ExitRecord> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Some(rec) = exit_record(record_dir) {
            return Some(rec);
        }
        if running(record_dir).is_none() || std::time::Instant::now() >= deadline {
            return exit_record(record_dir);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Stops the sandbox's monitor, if it still runs.
pub fn stop(record_dir: &Path) {
    if let Some(pid) = running(record_dir) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_record_decodes_wait_status() {
        let exited = ExitRecord { status: 7 << 8 };
        assert_eq!((exited.code(), exited.signal()), (7, None));
        let killed = ExitRecord { status: 9 };
        assert_eq!(killed.signal(), Some(9));
    }
}
