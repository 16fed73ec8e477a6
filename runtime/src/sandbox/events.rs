use std::io::Write;
use std::path::Path;
use std::time::Duration;

use libcontainer::container::ContainerStatus;

use super::{wrong_state, Loaded};
use crate::error::{Error, Result};
use crate::stats::{self, Event, Stats};

/// The current statistics of a sandbox.
pub fn stats(root: &Path, sandbox: &str) -> Result<Stats> {
    let loaded = Loaded::open(root, sandbox)?;
    let status = loaded.status();
    match loaded.cgroups_path() {
        Some(p) if status != ContainerStatus::Stopped => stats::read(&p, sandbox),
        _ => Err(wrong_state(sandbox, status, "events", "running")),
    }
}

/// Writes runc-format event lines to `out`: with `once`, one stats event; otherwise a stats
/// event every `interval` until the sandbox stops or is deleted.
pub fn events(
    root: &Path,
    sandbox: &str,
    interval: Duration,
    once: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let mut emit = |data: Stats| -> Result<()> {
        let ev = Event {
            kind: "stats",
            id: sandbox,
            data: Some(data),
        };
        let line =
            serde_json::to_string(&ev).map_err(|e| Error::Invalid(format!("encode event: {e}")))?;
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| Error::io("write event to", "stdout", e))
    };
    emit(stats(root, sandbox)?)?;
    if once {
        return Ok(());
    }
    loop {
        std::thread::sleep(interval);
        match stats(root, sandbox) {
            Ok(s) => emit(s)?,
            Err(Error::NotFound(_)) | Err(Error::WrongState { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
