use std::path::Path;

use super::{state, SandboxState};
use crate::error::{Error, Result};
use crate::store::Store;

/// The state of every sandbox under `root`; a sandbox deleted meanwhile is skipped.
pub fn list(root: &Path) -> Result<Vec<SandboxState>> {
    let mut out = Vec::new();
    for id in Store::new(root).ids()? {
        match state(root, &id) {
            Ok(s) => out.push(s),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
