use std::path::Path;

use libcontainer::container::ContainerStatus;

use super::{wrong_state, Loaded};
use crate::error::{Error, Result};

/// Thaws a paused sandbox.
pub fn resume(root: &Path, sandbox: &str) -> Result<()> {
    let mut loaded = Loaded::open(root, sandbox)?;
    let status = loaded.status();
    if status != ContainerStatus::Paused {
        return Err(wrong_state(sandbox, status, "resume", "paused"));
    }
    loaded
        .container_mut(sandbox, "resume", "paused")?
        .resume()
        .map_err(|e| Error::container("resume", sandbox, &e))
}
