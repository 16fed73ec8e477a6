//! Killing every process of a sandbox and removing its cgroups.
//!
//! Order of strength, as the kernel offers it: cgroup v2 `cgroup.kill` (one write, the kernel
//! kills the whole subtree, forks included); else freeze → SIGKILL every pid → thaw, repeated
//! until the tree is empty, so that a fork bomb cannot outrun the loop. Only then are the
//! directories removed, deepest first, in every hierarchy.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cgroups::SandboxCgroup;
use crate::error::{Error, Result};

/// How long teardown waits for a sandbox's processes to die before giving up.
pub const KILL_DEADLINE: Duration = Duration::from_secs(10);

/// Sends `signal` to every process of the sandbox, frozen so that none forks meanwhile.
pub fn signal_all(cg: &SandboxCgroup, signal: Signal) -> Result<()> {
    let frozen = freeze(cg, true)?;
    let result = send(&cg.pids(), signal);
    if frozen {
        freeze(cg, false)?;
    }
    result
}

/// Kills every process of the sandbox and waits until its cgroup tree is empty.
pub fn kill_everything(cg: &SandboxCgroup) -> Result<()> {
    let deadline = Instant::now() + KILL_DEADLINE;
    if let Some(dir) = cg.v2_dir() {
        let kill_file = dir.join("cgroup.kill");
        if kill_file.exists() {
            match fs::write(&kill_file, "1") {
                Ok(()) => return wait_empty(cg, deadline),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => tracing::warn!(path = %kill_file.display(), "cgroup.kill: {e}"),
            }
        }
    }
    loop {
        let sent = if cg.is_empty() {
            // Nothing in the hierarchy teardown freezes. A process the host moved into the
            // sandbox's cgroup of another hierarchy alone is still the sandbox's: kill it too.
            let stray = cg.pids();
            if stray.is_empty() {
                return Ok(());
            }
            send(&stray, Signal::SIGKILL)
        } else {
            let frozen = freeze(cg, true)?;
            // Read under the freeze: nothing can fork now, so the frozen tree's list is whole
            // (one read instead of one per hierarchy: 1000 pids in 13 hierarchies cost ms).
            let mut pids = if frozen {
                cg.freezer_pids()
            } else {
                Vec::new()
            };
            if pids.is_empty() {
                // No freezer, or the processes left are outside its tree: every hierarchy.
                pids = cg.pids();
            }
            let sent = send(&pids, Signal::SIGKILL);
            if frozen {
                freeze(cg, false)?;
            }
            sent
        };
        sent?;
        if wait_empty(cg, Instant::now() + Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Teardown {
                path: first_dir(cg),
                reason: format!("{} processes still alive after SIGKILL", cg.pids().len()),
            });
        }
    }
}

fn send(pids: &[i32], signal: Signal) -> Result<()> {
    for &pid in pids {
        match kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => return Err(Error::sys("kill", e)),
        }
    }
    Ok(())
}

fn wait_empty(cg: &SandboxCgroup, deadline: Instant) -> Result<()> {
    let mut pause = Duration::from_micros(100);
    loop {
        if cg.is_empty() && cg.pids().is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Teardown {
                path: first_dir(cg),
                reason: "processes did not exit in time".into(),
            });
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(1));
    }
}

fn first_dir(cg: &SandboxCgroup) -> PathBuf {
    cg.dirs().into_iter().next().unwrap_or_default()
}

/// Freezes (or thaws) the sandbox. Returns whether a freezer was there to use.
pub fn freeze(cg: &SandboxCgroup, frozen: bool) -> Result<bool> {
    if let Some(dir) = cg.v2_dir() {
        let file = dir.join("cgroup.freeze");
        return match fs::write(&file, if frozen { "1" } else { "0" }) {
            Ok(()) => {
                if frozen {
                    wait_v2_frozen(&dir);
                }
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("write", file, e)),
        };
    }
    let Some(dir) = cg.v1_dir("freezer") else {
        return Ok(false);
    };
    let file = dir.join("freezer.state");
    match fs::write(&file, if frozen { "FROZEN" } else { "THAWED" }) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("write", file, e)),
    }
    if frozen {
        // FREEZING can linger while tasks reach the refrigerator; re-writing FROZEN retries.
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            match fs::read_to_string(&file) {
                Ok(s) if s.trim() == "FROZEN" => break,
                Ok(_) => {
                    sleep(Duration::from_micros(100));
                    let _ = fs::write(&file, "FROZEN");
                }
                Err(_) => break,
            }
        }
    }
    Ok(true)
}

fn wait_v2_frozen(dir: &Path) {
    let events = dir.join("cgroup.events");
    let until = Instant::now() + Duration::from_millis(100);
    while Instant::now() < until {
        match fs::read_to_string(&events) {
            Ok(s) if s.lines().any(|l| l.trim() == "frozen 1") => return,
            Ok(_) => sleep(Duration::from_micros(100)),
            Err(_) => return,
        }
    }
}

/// Removes the sandbox's cgroup directories (and any children it made) in every hierarchy.
/// Missing directories are fine: removal is idempotent.
pub fn remove_cgroups(cg: &SandboxCgroup) -> Result<()> {
    for dir in cg.dirs() {
        remove_tree(&dir)?;
    }
    Ok(())
}

/// Removes `rel` (a parent such as `/paddock/<app>`) in every hierarchy where it is empty.
pub fn remove_if_empty(cg: &SandboxCgroup, rel: &str) {
    for h in &cg.layout.hierarchies {
        let dir = h.mount_point.join(rel.trim_start_matches('/'));
        let _ = fs::remove_dir(dir);
    }
}

fn remove_tree(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read cgroup dir", dir, e)),
    };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&e.path())?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(Error::io("remove cgroup", dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::Layout;

    #[test]
    fn v2_uses_cgroup_kill_and_removes_children_first() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().join("paddock/app/x");
        std::fs::create_dir_all(dir.join("sub/deeper")).unwrap_or_else(|e| panic!("{e}"));
        for f in ["cgroup.kill", "cgroup.procs", "cgroup.freeze"] {
            std::fs::write(dir.join(f), "").unwrap_or_else(|e| panic!("{e}"));
        }
        let l = Layout::from_mountinfo(&format!(
            "25 20 0:22 / {} rw - cgroup2 cgroup2 rw\n",
            tmp.path().display()
        ));
        let cg = SandboxCgroup::new(l, "/paddock/app/x");
        kill_everything(&cg).unwrap_or_else(|e| panic!("{e}"));
        let written = std::fs::read_to_string(dir.join("cgroup.kill")).unwrap_or_default();
        assert_eq!(written, "1");
        assert!(freeze(&cg, true).unwrap_or(false));
        assert_eq!(
            std::fs::read_to_string(dir.join("cgroup.freeze")).unwrap_or_default(),
            "1"
        );
        // Plain files stand in for the kernel's: clear them so rmdir-style removal can work.
        for f in ["cgroup.kill", "cgroup.procs", "cgroup.freeze"] {
            std::fs::remove_file(dir.join(f)).unwrap_or_else(|e| panic!("{e}"));
        }
        remove_cgroups(&cg).unwrap_or_else(|e| panic!("{e}"));
        assert!(!dir.exists());
        remove_if_empty(&cg, "/paddock/app");
        assert!(!tmp.path().join("paddock/app").exists());
        remove_cgroups(&cg).unwrap_or_else(|e| panic!("{e}"));
    }
}
