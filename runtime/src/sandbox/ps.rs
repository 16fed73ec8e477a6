use std::path::Path;

use super::Loaded;
use crate::error::Result;

/// Every pid in the sandbox's cgroup tree (host pid namespace view), sorted.
pub fn pids(root: &Path, sandbox: &str) -> Result<Vec<i32>> {
    let loaded = Loaded::open(root, sandbox)?;
    Ok(loaded.cgroup()?.map(|cg| cg.pids()).unwrap_or_default())
}
