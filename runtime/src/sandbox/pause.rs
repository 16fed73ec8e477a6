use std::path::Path;

use libcontainer::container::ContainerStatus;

use super::{wrong_state, Loaded};
use crate::error::{Error, Result};

/// Freezes every process of a running sandbox.
pub fn pause(root: &Path, sandbox: &str) -> Result<()> {
    let mut loaded = Loaded::open(root, sandbox)?;
    let status = loaded.status();
    if status != ContainerStatus::Running {
        return Err(wrong_state(sandbox, status, "pause", "running"));
    }
    loaded
        .container_mut(sandbox, "pause", "running")?
        .pause()
        .map_err(|e| Error::container("pause", sandbox, &e))
}
