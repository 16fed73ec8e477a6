use std::path::Path;

use libcontainer::container::ContainerStatus;

use super::{wrong_state, Loaded};
use crate::error::{Error, Result};

/// Starts the workload of a created sandbox.
pub fn start(root: &Path, sandbox: &str) -> Result<()> {
    let mut loaded = Loaded::open(root, sandbox)?;
    let status = loaded.status();
    if status != ContainerStatus::Created {
        return Err(wrong_state(sandbox, status, "start", "created"));
    }
    loaded
        .container_mut(sandbox, "start", "created")?
        .start()
        .map_err(|e| Error::container("start", sandbox, &e))
}
