//! `stage <app-dir>`: find the start command, import the stack into containerd (building it
//! once), pack the droplet; the droplet id is the last line printed.

use std::path::Path;

use crate::detect;
use crate::droplet;
use crate::error::Result;
use crate::node::Node;

use super::progress;

pub async fn stage(node: &mut Node, dir: &Path, command: Option<&str>) -> Result<String> {
    let start = detect::start_command(dir, command)?;
    progress(&format!(
        "start command ({}): {}",
        start.source, start.command
    ));
    node.ctd.take_lease().await?;
    let stack = node.ensure_stack(&mut progress).await;
    node.ctd.release_lease().await;
    let stack = stack?;
    progress(&format!(
        "stack {} imported into containerd (namespace {})",
        &stack.digest[..19],
        node.s.namespace
    ));
    let d = droplet::stage(dir, &start, &stack.digest, &node.droplets_dir())?;
    progress(&format!(
        "droplet: {} files, {} bytes, stored in {}",
        d.manifest.files,
        d.manifest.bytes,
        d.dir.display()
    ));
    Ok(d.id)
}
