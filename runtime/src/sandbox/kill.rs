use std::path::Path;

use libcontainer::container::ContainerStatus;
use nix::errno::Errno;
use nix::sys::signal::{self, Signal};

use super::{wrong_state, Loaded};
use crate::error::{Error, Result};
use crate::signal as signals;
use crate::teardown;

/// Sends a signal to the sandbox's init, or with `all` to every process in its cgroup tree.
/// `all` with SIGKILL returns only once the tree is empty.
pub fn kill(root: &Path, sandbox: &str, raw_signal: &str, all: bool) -> Result<()> {
    let sig = signals::parse(raw_signal)?;
    let loaded = Loaded::open(root, sandbox)?;
    let status = loaded.status();
    if all {
        let Some(cg) = loaded.cgroup()? else {
            return Ok(());
        };
        return if sig == Signal::SIGKILL {
            teardown::kill_everything(&cg)
        } else {
            teardown::signal_all(&cg, sig)
        };
    }
    if !matches!(
        status,
        ContainerStatus::Created | ContainerStatus::Running | ContainerStatus::Paused
    ) {
        return Err(wrong_state(sandbox, status, "kill", "running"));
    }
    let Some(pid) = loaded.container.as_ref().and_then(|c| c.pid()) else {
        return Err(wrong_state(sandbox, status, "kill", "running"));
    };
    match signal::kill(pid, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => return Err(Error::sys("kill", e)),
    }
    if status == ContainerStatus::Paused && sig == Signal::SIGKILL {
        if let Some(cg) = loaded.cgroup()? {
            teardown::freeze(&cg, false)?;
        }
    }
    Ok(())
}
